-- Shared by the miltertest scripts: connect to the milter under test (-D port=N) and negotiate as
-- Postfix does. miltertest's mt.negotiate(conn, 6, actions, protocol) sends the two masks
-- swapped (observed with miltertest 1.5.0, Debian 12); nil asks for libmilter's defaults, which
-- are Postfix's offer: version 6, actions 0x1FF, protocol 0x1FFFFF.
function connect_and_negotiate()
  local conn = mt.connect("inet:" .. port .. "@127.0.0.1", 40, 0.25)
  check(conn ~= nil, "connect to the milter on port " .. port)
  local err = mt.negotiate(conn, nil, nil, nil)
  check(err == nil, "negotiate: " .. tostring(err))
  return conn
end

-- miltertest reports a script's error only as "open(): <errno>": say what failed on stdout first.
function check(cond, what)
  if not cond then
    mt.echo("FAILED: " .. what)
    error("failed: " .. what)
  end
end

-- CONNECT, HELO, MAIL and RCPT of one message (macros as Postfix sends them).
function envelope(conn, sender, rcpt, ...)
  check(mt.conninfo(conn, "client.test.local", "192.0.2.7") == nil, "conninfo")
  check(mt.helo(conn, "client.test.local") == nil, "helo")
  mt.macro(conn, SMFIC_MAIL, "i", "4ABCD123", "{mail_addr}", sender)
  check(mt.mailfrom(conn, "<" .. sender .. ">", ...) == nil, "mailfrom")
  check(mt.getreply(conn) == SMFIR_CONTINUE, "MAIL answered CONTINUE")
  check(mt.rcptto(conn, "<" .. rcpt .. ">") == nil, "rcptto")
end

-- Header fields as Postfix sends them with SMFIP_HDR_LEADSPC: the value keeps its leading space.
function headers(conn, fields)
  for _, f in ipairs(fields) do
    check(mt.header(conn, f[1], f[2]) == nil, "header " .. f[1])
  end
  check(mt.eoh(conn) == nil, "eoh")
end

EICAR = [[X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*]]
