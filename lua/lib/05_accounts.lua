-- lib/05_accounts.lua: loading accounts into a call's context and writing back what changed.
-- A call reads each account with one HMGET (b, S, r and the fields its decision is known to need;
-- a field found to be needed later is read then, once, by HGET) and writes it once at the end (HSET
-- of what changed, HDEL of resolved holds), whatever number of decisions of the call touched it.

-- The account `key` in the call's context, with `extra` fields read in the same HMGET: nil (none),
-- one field name, or a list of them. A loaded account keeps what it read in st.f (field -> value or
-- false), what to write in st.set / st.del; all three are made when first needed. A team's account
-- is loaded with `member`, the field U|<id> of the member the call is about: it keeps its members in
-- st.members (field -> member table, or false: not a member; see member_record), and in st.one the
-- field of its only member while the call has loaded just one.
local function account(ctx, key, extra, member)
  local st = ctx.accounts[key]
  local one = extra ~= nil and B_type(extra) == 'string'
  if st then
    if extra then
      local f = st.f or {}
      st.f = f
      for i = 1, one and 1 or #extra do
        local name = one and extra or extra[i]
        if f[name] == nil then f[name] = rcall('HGET', key, name) or false end
      end
    end
    return st
  end
  local v, k = nil, 3  -- v[k + i]: the extra field i
  if member then
    k = 4
    if not extra then
      v = rcall('HMGET', key, 'b', 'S', 'r', member)
    elseif one then
      v = rcall('HMGET', key, 'b', 'S', 'r', member, extra)
    else
      v = rcall('HMGET', key, 'b', 'S', 'r', member, B_unpack(extra))
    end
  elseif not extra then
    v = rcall('HMGET', key, 'b', 'S', 'r')
  elseif one then
    v = rcall('HMGET', key, 'b', 'S', 'r', extra)
  else
    v = rcall('HMGET', key, 'b', 'S', 'r', B_unpack(extra))
  end
  st = st_new(key, v[1] or nil, v[2] or nil, v[3] or nil, member ~= nil)
  st.exists = v[1] ~= false
  if member then
    local raw = v[4]
    st.members, st.one = { [member] = raw and member_new(raw) or false }, member
  end
  if one then
    st.f = { [extra] = v[k + 1] or false }
  elseif extra then
    local f = {}
    for i = 1, #extra do f[extra[i]] = v[k + i] or false end
    st.f = f
  end
  ctx.accounts[key] = st
  ctx.order[#ctx.order + 1] = st
  return st
end

-- a field of a loaded account (read once per call)
local function field(st, name)
  local f = st.f
  if not f then
    f = {}
    st.f = f
  end
  local v = f[name]
  if v == nil then
    v = rcall('HGET', st.key, name) or false
    f[name] = v
  end
  return v or nil
end

local function field_set(st, name, v)
  local f, set = st.f or {}, st.set or {}
  st.f, st.set = f, set
  f[name], set[name] = v, v
  if st.del then st.del[name] = nil end
end

local function field_del(st, name)
  local f, del = st.f or {}, st.del or {}
  st.f, st.del = f, del
  f[name], del[name] = false, true
  if st.set then st.set[name] = nil end
end

-- the balance and held as text (formatted once per value)
local function bal_text(st)
  local s = st.bals
  if not s then
    s = I(st.bal)
    st.bals = s
  end
  return s
end

local function held_text(st)
  if st.helds_of ~= st.held then st.helds, st.helds_of = I(st.held), st.held end
  return st.helds
end

-- a model's window of a loaded account (parsed once per call; written back if changed)
local function model_window(st, f)
  st.models = st.models or {}
  local w = st.models[f]
  if not w then
    w = mw_new(field(st, f))
    st.models[f] = w
  end
  return w
end

-- a team member's record of a loaded team, a removed member's included (their spend history stays:
-- period 'x'); nil if the id never was a member. uf: its field 'U|<uid>' if the caller has it. A
-- member not loaded with the account is read by HGET (another member of a batch, a hold's member).
local function member_record(st, uid, uf)
  uf = uf or 'U|' .. uid
  local members, m = st.members, nil  -- (a team's account starts with st.members and st.f false)
  if members then m = members[uf] end
  if m == nil then
    local raw = field(st, uf)
    m = raw and member_new(raw) or false
    if members then
      members[uf], st.one = m, false
    else
      st.members, st.one = { [uf] = m }, uf
    end
  end
  return m or nil
end

-- a member of a loaded team (nil if not a member now)
local function member_of(st, uid, uf)
  local m = member_record(st, uid, uf)
  if m and m.period ~= 'x' then return m end
  return nil
end

-- write back every changed account; `entry` is the call's stream entry id (ring entries name it)
local function accounts_store(ctx, entry)
  local order = ctx.order
  for i = 1, #order do  -- (not ipairs: its iterator is a C call per account)
    local st = order[i]
    local ring
    local cid = st.rc
    if cid then
      local r = st.rr
      local new = st.ring_new
      if not new then  -- the common case: one call id, one concatenation
        if r then
          ring = cid .. '=' .. entry .. (ROW_SUFFIX[r] or row_suffix(r)) .. ';' .. st.ring
        else
          ring = cid .. '=;' .. st.ring
        end
      else
        ring = cid .. '=' .. (r and ref_of(entry, r) or '') .. ';'
        for i = 1, #new, 2 do  -- pairs call id, row: the newest first
          r = new[i + 1]
          ring = new[i] .. '=' .. (r and ref_of(entry, r) or '') .. ';' .. ring
        end
        ring = ring .. st.ring
      end
      if #ring > 2 * RING_KEEP then ring = ring_text(ring) end
    end
    local more = st.wS or st.set or st.models
    if not (more or st.members) then
      -- the common case: the balance and the ring
      if st.wb and ring then
        rcall('HSET', st.key, 'b', st.bals or bal_text(st), 'r', ring)
      elseif st.wb then
        rcall('HSET', st.key, 'b', st.bals or bal_text(st))
      elseif ring then
        rcall('HSET', st.key, 'r', ring)
      end
    else
      -- a team debit's: the balance, the ring and its one member, said at once too (building the
      -- argument table below would cost it ~6k instructions)
      local one = not more and st.wb and ring and st.one
      local m = one and st.members[one]
      if m and m.dirty then
        rcall('HSET', st.key, 'b', bal_text(st), 'r', ring, one, member_text(m))
      else
        local args = { st.key }
        if st.wb then
          args[#args + 1] = 'b'
          args[#args + 1] = bal_text(st)
        end
        if st.wS then
          args[#args + 1] = 'S'
          args[#args + 1] = st_text(st)
        end
        if ring then
          args[#args + 1] = 'r'
          args[#args + 1] = ring
        end
        if st.models then
          for f, w in B_pairs(st.models) do
            if w.dirty then
              args[#args + 1] = f
              args[#args + 1] = mw_text(w)
            end
          end
        end
        if st.members then
          for uf, u in B_pairs(st.members) do
            if u and u.dirty then
              args[#args + 1] = uf
              args[#args + 1] = member_text(u)
            end
          end
        end
        if st.set then
          for f, v in B_pairs(st.set) do
            args[#args + 1] = f
            args[#args + 1] = v
          end
        end
        if #args > 1 then rcall('HSET', B_unpack(args)) end
      end
    end
    if st.del and B_next(st.del) then
      local d = { st.key }
      for f in B_pairs(st.del) do d[#d + 1] = f end
      rcall('HDEL', B_unpack(d))
    end
  end
end

-- remember that call id `cid` changed this account (row: its row in the call's entry, or nil): the
-- call's first in st.rc / st.rr, any more in st.ring_new
local function ring_add(st, cid, row_index)
  if not st.rc then
    st.rc, st.rr = cid, row_index or false
    return
  end
  local new = st.ring_new
  if not new then
    st.ring_new = { cid, row_index or false }
    return
  end
  new[#new + 1] = cid
  new[#new + 1] = row_index or false
end

-- Expired holds of an account leave it (one 'expire' row each); hx becomes the earliest open hold's
-- expiry. Holds are fields h:<rid> of the account hash: found with HSCAN, only when hx says one is
-- due (hx may be early: a settled hold does not move it; the next sweep does).
local function holds_sweep(ctx, st, ak, aid, team)
  local now = ctx.c.now
  if st.hx == '' or st.hx + 0 > now then return end
  local held, nx, cursor = st.held, nil, '0'
  local acct = esc(aid)
  repeat
    local r = rcall('HSCAN', st.key, cursor, 'MATCH', 'h:*', 'COUNT', 1000)
    cursor = r[1]
    local kv = r[2]
    for i = 1, #kv, 2 do
      local f = kv[i]
      if not (st.f and st.f[f] == false) then
        local a, e, op, member = hold_decode(kv[i + 1], team)
        if e <= now then
          local rid = ssub(f, 3)
          held = held - a
          field_del(st, f)
          field_del(st, 'qh|' .. rid)  -- a quantity estimate it held (quantity limits)
          if member then
            local m = member_record(st, member)
            if m then m.held, m.dirty = m.held - a, true end
          end
          row(ctx, 'exp:' .. rid, 'expire', '0', bal_text(st), I(held), I(a), '', '', '', '',
            '\t' .. esc(op) .. '\t' .. ak .. '\t' .. acct .. '\t' .. esc(member or '') .. '\t' .. rid .. '\t\t\t\t')
        elseif not nx or e < nx then
          nx = e
        end
      end
    end
  until cursor == '0'
  st_held(st, held)
  st.hx = nx and I(nx) or ''
end

-- sum of the holds past due (read-only scripts), per member for a team
local function holds_expired(st, now, team)
  if st.hx == '' or st.hx + 0 > now then return 0, {} end
  local total, per, cursor = 0, {}, '0'
  repeat
    local r = rcall('HSCAN', st.key, cursor, 'MATCH', 'h:*', 'COUNT', 1000)
    cursor = r[1]
    for i = 1, #r[2], 2 do
      local a, e, _, member = hold_decode(r[2][i + 1], team)
      if e <= now then
        total = total + a
        if member then per[member] = (per[member] or 0) + a end
      end
    end
  until cursor == '0'
  return total, per
end

-- a hold was added: hx becomes its expiry if earlier
local function holds_expiry_add(st, expires)
  if st.hx == '' or expires < st.hx + 0 then st.hx, st.wS = I(expires), true end
end
