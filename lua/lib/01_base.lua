-- lib/01_base.lua: bound globals, numbers, calendar buckets, the per-call configuration and clock.
-- The lib/*.lua files are joined in name order (ducto_redis/scripts.py), each one topic that may use
-- what the files before it define, ahead of the scripts: loaded once as the top of the function
-- library, and put before a script's body when it is sent with EVAL. The top level only defines
-- things (it runs at library load time, where Redis offers no string, table or cjson).
--
-- Conventions shared by all scripts:
--   * A script's KEYS, ARGV and reply are named in its header, as ducto_redis/specs.py names them.
--   * ARGV `config` is the store's configuration string (see config below; "" = the defaults');
--     time is Redis TIME plus its clock offset (0 except in tests).
--   * Stored formats are defined in ducto_redis/layout.py; lib/02_state.lua reads and writes them.
--   * Integers are formatted with I() ('%d': exact up to 2^53-1; tostring would round), and text
--     is turned into numbers with `+ 0` (a third of tonumber's cost); both are the price of a
--     decision, so each value is converted once.

-- Globals the scripts use, bound once into the library's locals by bind() (at load time Redis
-- offers no string, table or cjson): an upvalue costs less than a global and a field lookup.
local rcall, smatch, mfloor, ssub, sfind, tconcat, jencode, mmin, mceil, sgmatch, sbyte, mmax, sgsub, sformat, tsort, jdecode, B_ipairs, B_pairs, B_next, B_select, B_setmetatable, B_type, B_unpack
local function bind()
  rcall = redis.call
  smatch = string.match
  mfloor = math.floor
  ssub = string.sub
  sfind = string.find
  tconcat = table.concat
  jencode = cjson.encode
  mmin = math.min
  mceil = math.ceil
  sgmatch = string.gmatch
  sbyte = string.byte
  mmax = math.max
  sgsub = string.gsub
  sformat = string.format
  tsort = table.sort
  jdecode = cjson.decode
  B_ipairs = ipairs
  B_pairs = pairs
  B_next = next
  B_select = select
  B_setmetatable = setmetatable
  B_type = type
  B_unpack = unpack
end

local MAX_SAFE = 9007199254740991

local function I(n)
  return sformat('%d', n)
end

-- small non-negative integers as text, remembered (row numbers, milliseconds of a second)
local small_text = {}
local function N(n)
  local s = small_text[n]
  if not s then
    s = I(n)
    if n < 4096 then small_text[n] = s end
  end
  return s
end
local ms_text = {}

-- days since 1970-01-01 <-> proleptic Gregorian (y, m, d); H. Hinnant's algorithms
local function civil_from_days(z)
  z = z + 719468
  local era = mfloor(z / 146097)
  local doe = z - era * 146097
  local yoe = mfloor((doe - mfloor(doe / 1460) + mfloor(doe / 36524) - mfloor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + mfloor(yoe / 4) - mfloor(yoe / 100))
  local mp = mfloor((5 * doy + 2) / 153)
  local d = doy - mfloor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m, d
end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = mfloor(y / 400)
  local yoe = y - era * 400
  local mp = m > 2 and m - 3 or m + 9
  local doy = mfloor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + mfloor(yoe / 4) - mfloor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- window buckets: "d" -> day number, "m" -> year*12 + month - 1; and when the bucket ends (ms).
-- The month of the last day asked is remembered (a library keeps its locals between calls).
local memo_day, memo_month, memo_month_end
local function month_of_day(day)
  if day ~= memo_day then
    local y, m = civil_from_days(day)
    local ny, nm = y, m + 1
    if nm == 13 then ny, nm = y + 1, 1 end
    memo_day, memo_month, memo_month_end = day, y * 12 + m - 1, days_from_civil(ny, nm, 1) * 86400000
  end
  return memo_month, memo_month_end
end

local function bucket_of(period, ms)
  local day = mfloor(ms / 86400000)
  if period == 'd' then return day, (day + 1) * 86400000 end
  return month_of_day(day)
end

-- The store's configuration, the `config` ARGV of every script that needs it:
-- "<clock offset ms>|<idempotency TTL s>|<events max length>|<ledger backlog limit>|<policy>", or
-- "" (or left out, where a script's spec makes it optional) for DEFAULT_CONFIG, the default
-- settings' (the library's first line, written by ducto_redis/scripts.py). Parsed once per distinct
-- string (a pure function of it, so remembering it is always right); callers look it up as
-- configs[text or ''] first.
local configs, config_count = {}, 0
local function config(text)
  text = text or ''
  local c = configs[text]
  if c then return c end
  local off, ttl, maxlen, backlog, policy = smatch(text == '' and DEFAULT_CONFIG or text,
    '^(%-?%d+)|(%d+)|(%d+)|(%d+)|(%a+)$')
  c = { offset = off + 0, idem_ttl = ttl, maxlen = maxlen, backlog = backlog + 0, closed = policy == 'closed' }
  if config_count > 64 then configs, config_count = {}, 0 end
  configs[text] = c
  config_count = config_count + 1
  return c
end

-- The clock of one script call: { now = ms, sec .. msx = ms as text (see ts_text), day = day
-- bucket, month = month bucket } (one table, reused by every call: between calls it holds the last
-- call's time; the time as text is kept in two pieces that a row joins into its own text, so a call
-- makes no string of it; dstart..dend: the day's span in ms, so day and month are worked out again
-- only when `now` leaves it). Its time is Redis': TIME (clock), or the id of the call's own ledger
-- entry (XADD's '*' is Redis' clock in ms too: lib/08_debit.lua debit_clock).
local CLOCK = { dstart = 0, dend = 0, now = false }
local function clock_at(now, sec, msx)
  local c = CLOCK
  c.sec, c.msx, c.now = sec, msx, now
  if now >= c.dend or now < c.dstart then
    local day = mfloor(now / 86400000)
    c.day, c.dstart, c.dend, c.month = day, day * 86400000, day * 86400000 + 86400000, (month_of_day(day))
  end
  return c
end

-- The clock a batch decides on before its time is known (lib/08_debit.lua many_stands): the last
-- call's day and month, no time (its rows' empty ts: their entry's); set by ctx_new.
local SPEC = { now = false, sec = '', msx = '', day = false, month = false }

local function clock(cfg)
  local t = rcall('TIME')
  local s, ms = t[1], mfloor(t[2] / 1000)
  local off = cfg.offset
  if off == 0 then  -- the seconds as Redis sent them and the milliseconds, zero-padded
    local m = ms_text[ms]
    if not m then
      m = sformat('%03d', ms)
      ms_text[ms] = m
    end
    return clock_at(s * 1000 + ms, s, m)
  end
  local now = s * 1000 + ms + off
  return clock_at(now, I(now), '')
end

-- the clock's time (ms) as text
local function ts_text(c)
  return c.sec .. c.msx
end
