-- SIZE= above milter.maxMessageSize: refused at MAIL with 552 5.3.4.
dofile(dir .. "/common.lua")
local conn = connect_and_negotiate()
check(mt.conninfo(conn, "client.test.local", "192.0.2.7") == nil, "conninfo")
check(mt.mailfrom(conn, "<a@test.local>", "SIZE=999999999") == nil, "mailfrom")
check(mt.getreply(conn) == SMFIR_REPLYCODE, "MAIL answered REPLYCODE")
mt.disconnect(conn)
mt.echo("ok size")
