-- Clean mail with a forged verdict field: the forgery is deleted, ours inserted at the top, ACCEPT.
dofile(dir .. "/common.lua")
local conn = connect_and_negotiate()
envelope(conn, "a@test.local", "b@example.test")
check(mt.data(conn) == nil, "data")
check(mt.getreply(conn) == SMFIR_CONTINUE, "DATA answered CONTINUE")
headers(conn, {
  { "From", " a@test.local" },
  { "X-Sandgate-Verdict", " clean; reason=clean; forged" },
  { "Subject", " clean through miltertest" },
  { "Message-ID", " <mt-clean@test.local>" },
})
check(mt.bodystring(conn, "Just text.\r\n") == nil, "body")
check(mt.eom(conn) == nil, "eom")
check(mt.getreply(conn) == SMFIR_ACCEPT, "end of message answered ACCEPT")
check(mt.eom_check(conn, MT_HDRDELETE, "X-Sandgate-Verdict"), "the forged X-Sandgate-Verdict deleted")
check(mt.eom_check(conn, MT_HDRINSERT, "X-Sandgate-Verdict"), "our X-Sandgate-Verdict inserted")
check(mt.eom_check(conn, MT_HDRINSERT, "X-Sandgate-Mark"), "X-Sandgate-Mark inserted")
local v = mt.getheader(conn, "X-Sandgate-Verdict", 0)
check(v ~= nil and string.find(v, "^ clean; reason=clean; scanners=rules:clean; id=sg%-") ~= nil, "verdict value: " .. tostring(v))
mt.disconnect(conn)
mt.echo("ok clean")
