-- EICAR: refused inside the client's session with 550 5.7.1, nothing added.
dofile(dir .. "/common.lua")
local conn = connect_and_negotiate()
envelope(conn, "a@test.local", "b@example.test")
headers(conn, { { "From", " a@test.local" }, { "Subject", " eicar" } })
check(mt.bodystring(conn, EICAR .. "\r\n") == nil, "body")
check(mt.eom(conn) == nil, "eom")
check(mt.getreply(conn) == SMFIR_REPLYCODE, "end of message answered REPLYCODE")
-- miltertest matches a reply only with all three parts; the test runs the milter with
-- milter.rejectText "Message refused: {threats}" (no message id) to make the text known.
check(mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.1", "Message refused: Sandgate.Test.EICAR"), "550 5.7.1 Message refused: Sandgate.Test.EICAR")
check(not mt.eom_check(conn, MT_HDRINSERT), "nothing inserted into refused mail")
mt.disconnect(conn)
mt.echo("ok eicar")
