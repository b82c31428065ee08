"""The Lua scripts of the Redis store, and the key layout they share with ``redis.py``.

Every script takes the key prefix as ``ARGV[1]`` and builds its keys from it (so the store
runs on a standalone Redis or behind Sentinel, not on Redis Cluster). Row fields are stored
one hash field per row field, as the JSON text Python wrote, so Lua never re-encodes a value
it did not change (cjson would print 2.0 as ``2`` and round to 14 digits). Lua numbers are
doubles: every number handed to ``redis.call`` is formatted first (``%d``, ``%.17g``).
"""

from __future__ import annotations

import json

from flask_jobmetrics.schema import START_TIME, STATUS

__all__ = [
    "LEASE", "LIST_JOBS", "MERGE", "OUTBOX_DONE", "OUTBOX_READ", "OUTBOX_RETRY", "OUTBOX_REVIVE", "TOKEN",
]  # fmt: skip

#: Prefix and key names; mirrored by ``RedisStore.key`` and ``RedisStore.client_key``.
_HEAD = r"""
local P = ARGV[1]
local K_JOBS, K_OUTBOX, K_DEAD, K_META = P .. 'jobs', P .. 'outbox', P .. 'outbox:dead', P .. 'outbox:meta'
local K_MARK = P .. 'runid:mark'
local function esc(s) return (string.gsub(string.gsub(s, '%%', '%%25'), ':', '%%3A')) end
local function k_job(run) return P .. 'job:' .. run end
local function k_client(run, cid) return P .. 'client:' .. esc(run) .. ':' .. cid end
local function k_clients(run) return P .. 'clients:' .. run end
local function k_status(status) return P .. 'jobs:status:' .. status end
local function fail(code, msg) error({err = code .. ' ' .. msg}) end
"""

#: Value logic: JSON texts compared and added exactly (ints as decimal strings, datetimes as instants).
_VALUES = r"""
local function kind(t)
  local c = string.sub(t, 1, 1)
  if c == '"' then return 'str' elseif c == 'n' then return 'null' end
  if c == '{' then return string.find(t, '"$dt"', 1, true) and 'dt' or 'other' end
  if c == 't' or c == 'f' or c == '[' then return 'other' end
  return string.match(t, '^%-?%d+$') and 'int' or 'float'
end
local function bytes_lt(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function abs_cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return bytes_lt(a, b) and -1 or 1
end
local function abs_add(a, b)
  local out, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry + (i > 0 and string.byte(a, i) - 48 or 0) + (j > 0 and string.byte(b, j) - 48 or 0)
    carry = s >= 10 and 1 or 0
    out[#out + 1] = s % 10
    i, j = i - 1, j - 1
  end
  return string.reverse(table.concat(out))
end
local function abs_sub(a, b)  -- a >= b
  local out, borrow, i, j = {}, 0, #a, #b
  while i > 0 do
    local s = string.byte(a, i) - 48 - borrow - (j > 0 and string.byte(b, j) - 48 or 0)
    borrow = s < 0 and 1 or 0
    out[#out + 1] = s % 10
    i, j = i - 1, j - 1
  end
  local r = string.gsub(string.reverse(table.concat(out)), '^0+', '')
  return r == '' and '0' or r
end
local function split_int(t)
  local neg = string.sub(t, 1, 1) == '-'
  local digits = string.gsub(neg and string.sub(t, 2) or t, '^0+', '')
  if digits == '' then return false, '0' end
  return neg, digits
end
local function int_add(x, y)
  local xn, xa = split_int(x)
  local yn, ya = split_int(y)
  if xn == yn then return (xn and '-' or '') .. abs_add(xa, ya) end
  local c = abs_cmp(xa, ya)
  if c == 0 then return '0' end
  if c > 0 then return (xn and '-' or '') .. abs_sub(xa, ya) end
  return (yn and '-' or '') .. abs_sub(ya, xa)
end
local function int_lt(x, y)
  local xn, xa = split_int(x)
  local yn, ya = split_int(y)
  if xn ~= yn then return xn end
  local c = abs_cmp(xa, ya)
  if xn then return c > 0 end
  return c < 0
end
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end
local function instant(t)  -- {"$dt": ISO} -> seconds since the epoch, microseconds
  local s = cjson.decode(t)['$dt']
  local y, mo, d, h, mi, se, rest = string.match(s, '^(%d+)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)(.*)$')
  if not y then fail('JMVALUE', 'not an ISO datetime: ' .. s) end
  local us, frac = 0, string.match(rest, '^[%.,](%d+)')
  if frac then
    us = tonumber(string.sub(frac .. '000000', 1, 6))
    rest = string.sub(rest, #frac + 2)
  end
  local off = 0
  if rest ~= '' and rest ~= 'Z' then
    local sign, oh, om, os = string.match(rest, '^([%+%-])(%d%d):?(%d%d):?(%d*)')
    if not sign then fail('JMVALUE', 'bad UTC offset in ' .. s) end
    off = (tonumber(oh) * 3600 + tonumber(om) * 60 + (tonumber(os) or 0)) * (sign == '-' and -1 or 1)
  end
  local days = days_from_civil(tonumber(y), tonumber(mo), tonumber(d))
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se) - off, us
end
local function lt(a, b)  -- a < b, as Python compares the decoded values
  local ka, kb = kind(a), kind(b)
  if (ka == 'int' or ka == 'float') and (kb == 'int' or kb == 'float') then
    if ka == 'int' and kb == 'int' then return int_lt(a, b) end
    return tonumber(a) < tonumber(b)
  end
  if ka == 'str' and kb == 'str' then return bytes_lt(cjson.decode(a), cjson.decode(b)) end
  if ka == 'dt' and kb == 'dt' then
    local sa, ua = instant(a)
    local sb, ub = instant(b)
    return sa < sb or (sa == sb and ua < ub)
  end
  fail('JMTYPE', "'<' not supported between " .. ka .. ' and ' .. kb)
end
local MAX_EXACT = '9007199254740992'  -- 2**53: a sum beyond it is refused (nil)
local function beyond(t)  -- a number beyond 2**53 in size
  local k = kind(t)
  if k == 'int' then
    local _, digits = split_int(t)
    return abs_cmp(digits, MAX_EXACT) > 0
  end
  return k == 'float' and math.abs(tonumber(t)) > 9007199254740992
end
local function add(a, b)
  local ka, kb = kind(a), kind(b)
  if ka == 'int' and kb == 'int' then
    local sum = int_add(a, b)
    if beyond(sum) then return nil end
    return sum
  end
  if (ka == 'int' or ka == 'float') and (kb == 'int' or kb == 'float') then
    local r = tonumber(a) + tonumber(b)
    if r ~= r or r == math.huge or r == -math.huge then fail('JMVALUE', 'the sum is not finite') end
    if math.abs(r) > 9007199254740992 then return nil end  -- before formatting: exact enough
    local t = string.format('%.17g', r)
    if not string.find(t, '[%.eE]') then t = t .. '.0' end
    return t
  end
  if ka == 'str' and kb == 'str' then return cjson.encode(cjson.decode(a) .. cjson.decode(b)) end
  fail('JMTYPE', 'unsupported operand types for +: ' .. ka .. ' and ' .. kb)
end
-- Appended text (flask_jobmetrics.journal and longtext, character for character): lines
-- merged in the order of their leading timestamp, then bounded as Airtable counts (UTF-16
-- code units), the newest text kept.
local ELLIPSIS = '\226\128\166'
local function nchars(s)  -- characters, as Python's len (UTF-8 continuation bytes not counted)
  local _, continuation = string.gsub(s, '[\128-\191]', '')
  return #s - continuation
end
local function units(s)  -- UTF-16 code units, as Airtable counts (airtable_limits.text_length)
  local _, wide = string.gsub(s, '[\240-\247]', '')
  return nchars(s) + wide
end
local MARK_HEAD, MARK_TAIL = '[' .. ELLIPSIS .. ' ', ' earlier characters cut ' .. ELLIPSIS .. ']\n'
local MARK = '^%[' .. ELLIPSIS .. ' ([%d,]+) earlier characters cut ' .. ELLIPSIS .. '%]\n()'
local function cut_mark(count)  -- as Python's format(count, ',')
  local grouped = string.reverse((string.gsub(string.reverse(string.format('%d', count)), '(%d%d%d)', '%1,')))
  return MARK_HEAD .. (string.gsub(grouped, '^,', '')) .. MARK_TAIL
end
local function bound_text(text, limit)  -- longtext.bound_text without a head
  if units(text) <= limit then return text end
  local rest, already = text, 0
  local count, after = string.match(text, MARK)
  if count then
    already = tonumber((string.gsub(count, ',', '')))
    rest = string.sub(text, after)
  end
  local size = nchars(rest)
  local room = limit - nchars(cut_mark(already + size))
  local from, used = #rest + 1, 0  -- the longest tail of whole characters within room units
  while from > 1 do
    local start = from - 1
    while start > 1 and string.find(string.sub(rest, start, start), '^[\128-\191]') do start = start - 1 end
    local width = string.byte(rest, start) >= 240 and 2 or 1
    if used + width > room then break end
    used, from = used + width, start
  end
  local tail = string.sub(rest, from)
  if from > 1 then  -- start at a line when one begins within the first 1000 characters
    local newline = string.find(tail, '\n', 1, true)
    if newline and nchars(string.sub(tail, 1, newline - 1)) < 1000 then
      tail = string.sub(tail, newline + 1)
    end
  end
  return cut_mark(already + size - nchars(tail)) .. tail
end
local STAMP = '^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d%d%dZ '
local function line_key(line)
  if string.find(line, STAMP) then return string.sub(line, 1, 24) end
  return ''
end
local function split_lines(s)
  local out = {}
  for line in string.gmatch(s .. '\n', '(.-)\n') do out[#out + 1] = line end
  return out
end
local function merge_lines(old, new)
  if old == nil or old == '' then return new end
  if new == '' then return old end
  local added = split_lines(new)
  if line_key(added[1]) >= line_key(string.match(old, '([^\n]*)$')) then return old .. '\n' .. new end
  local kept, out, i, j = split_lines(old), {}, 1, 1
  while i <= #kept and j <= #added do
    if line_key(added[j]) < line_key(kept[i]) then
      out[#out + 1] = added[j]; j = j + 1
    else
      out[#out + 1] = kept[i]; i = i + 1
    end
  end
  for n = i, #kept do out[#out + 1] = kept[n] end
  for n = j, #added do out[#out + 1] = added[n] end
  return table.concat(out, '\n')
end
local function append(old, new)  -- new: [limit, text]
  local op, previous = cjson.decode(new), nil
  if old ~= nil and kind(old) == 'str' then previous = cjson.decode(old) end
  return cjson.encode(bound_text(merge_lines(previous, op[2]), op[1]))
end
local function combine(agg, old, new)
  if agg == 'append' then return append(old, new) end
  if old == nil or old == 'null' then
    if agg == 'sum' and new ~= 'null' and beyond(new) then return nil end
    return new
  end
  if new == 'null' then return old end
  if agg == 'sum' then return add(old, new) end
  if agg == 'min' then return lt(new, old) and new or old end
  if agg == 'max' then return lt(old, new) and new or old end
  return new
end
local function score(t)  -- a job's Start Time as epoch microseconds (-inf without one)
  if t == nil or kind(t) ~= 'dt' then return '-inf' end
  local s, us = instant(t)
  return string.format('%.0f', s * 1e6 + us)
end
"""

#: Rows cached while a script runs; nothing is written before ``flush`` (a failing script
#: changes nothing, as Redis does not roll a script back).
_ROWS = r"""
local STATUS, START = @STATUS@, @START@
local rows, dirty = {}, {}
local function status_of(fields)
  local t = fields[STATUS]
  if t and kind(t) == 'str' then return cjson.decode(t) end
  return nil
end
local function load(key, rkind, run, cid)
  if rows[key] then return rows[key] end
  local flat = redis.call('HGETALL', key)
  local r = {key = key, kind = rkind, run = run, cid = cid, fields = {}, v = 0, c = false, exists = #flat > 0}
  for i = 1, #flat, 2 do
    local n, t = flat[i], flat[i + 1]
    if n == '_v' then r.v = tonumber(t)
    elseif n == '_c' then r.c = t == '1'
    elseif string.sub(n, 1, 2) == 'f:' then r.fields[string.sub(n, 3)] = t end
  end
  r.was_c, r.old_status = r.c, status_of(r.fields)
  rows[key] = r
  return r
end
local function touch(r)
  if not r.dirty then r.dirty = true; dirty[#dirty + 1] = r end
  r.exists, r.v = true, r.v + 1
end
local function reply(r)
  local flat = {}
  for n, t in pairs(r.fields) do flat[#flat + 1] = n; flat[#flat + 1] = t end
  return {r.v, r.c and 1 or 0, flat}
end
local function queue(member, v, completed)
  if ARGV[7] == '0' then return end  -- the store keeps no outbox (Airtable publishing is off)
  local meta = redis.call('HGET', K_META, member)
  local attempts, err = '0', ''
  if meta then attempts, err = string.match(meta, '^%d+:(%d+):(.*)$') end
  if not meta then
    redis.call('ZADD', K_OUTBOX, 0, member)
  elseif redis.call('ZREM', K_DEAD, member) == 1 then  -- changed since Airtable refused it: try again
    attempts = '0'
    redis.call('ZADD', K_OUTBOX, 0, member)
  elseif completed and attempts == '0' then  -- due at once, unless backing off after an error
    redis.call('ZADD', K_OUTBOX, 0, member)
  end
  redis.call('HSET', K_META, member, string.format('%d', v) .. ':' .. attempts .. ':' .. err)
end
local function retain(run, retention)  -- a completed job's keys expire; a reopened one's persist
  local job = load(k_job(run), 'job', run, '')
  if not (job.c or job.was_c) then return end
  local keys = {k_job(run), k_clients(run)}
  for _, cid in ipairs(redis.call('SMEMBERS', k_clients(run))) do keys[#keys + 1] = k_client(run, cid) end
  for _, key in ipairs(keys) do
    if job.c and retention ~= '0' then
      redis.call('PEXPIRE', key, retention)
    else
      redis.call('PERSIST', key)
    end
  end
end
local function flush(retention)
  local runs, seen_runs = {}, {}
  for _, r in ipairs(dirty) do
    redis.call('DEL', r.key)
    local args = {r.key, '_v', string.format('%d', r.v), '_c', r.c and '1' or '0'}
    for n, t in pairs(r.fields) do args[#args + 1] = 'f:' .. n; args[#args + 1] = t end
    redis.call('HSET', unpack(args))
    if r.kind == 'client' then
      redis.call('SADD', k_clients(r.run), r.cid)
      queue('1' .. r.run .. '\0' .. r.cid, r.v, r.c)
    else
      local s, status = score(r.fields[START]), status_of(r.fields)
      redis.call('ZADD', K_JOBS, s, r.run)
      if r.old_status then redis.call('ZREM', k_status(r.old_status), r.run) end
      if status then redis.call('ZADD', k_status(status), s, r.run) end
      queue('0' .. r.run .. '\0', r.v, r.c)
    end
    if not seen_runs[r.run] then seen_runs[r.run] = true; runs[#runs + 1] = r.run end
  end
  for _, run in ipairs(runs) do retain(run, retention) end
end
""".replace("@STATUS@", json.dumps(STATUS)).replace("@START@", json.dumps(START_TIME))

#: ARGV: prefix, now, idempotency expiry (now + ttl), its PX, retention ms ('0': never),
#: items (JSON), '1'/'0' (keep an outbox), delivery token ('' for none; one already applied
#: changes nothing, and its items reply applied = 2: by an earlier send). A client
#: item {t='c', r, c, o=[[name, agg, text]...], x, k} merges ops; from a Python transaction
#: it carries the new fields f={name: text} and version v instead. A job
#: item {t='j', r, f, x, n, v, m} puts the job (n: only if it does not exist; m: the new run-ID
#: high-water mark, epoch seconds). A reservation {t='m', e, f} creates the job at the first
#: free second at or after e and past the mark, and moves the mark there (with a token, the
#: run is kept under ``idem-run:TOKEN``: a re-sent reservation answers with it). Returns per item
#: {applied, version, completed, flat fields, client ids (job items), job completed, refused sums
#: as flat [name, text...] (a sum beyond 2**53 is not added), run ID}.
MERGE = (
    _HEAD
    + _VALUES
    + _ROWS
    + r"""
local NOW, IDEM_EXP, IDEM_PX, RETENTION = tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5]
local seen_here, keys = {}, {}
local function seen(key)
  if seen_here[key] then return true end
  local expires = redis.call('GET', P .. 'idem:' .. key)
  return expires and tonumber(expires) > NOW
end
local function merge_client(it)
  local row = load(k_client(it.r, it.c), 'client', it.r, it.c)
  local refused = {}
  if it.k and not it.f and seen(it.k) then return 0, row, nil, refused end
  if it.f then
    row.fields = it.f
  else
    if not row.exists then row.fields = {[STATUS] = '"Running"'} end
    for _, op in ipairs(it.o) do
      local name, agg, text = op[1], op[2], op[3]
      local merged = text
      if agg ~= 'set' then merged = combine(agg, row.fields[name], text) end
      if merged == nil then  -- a sum beyond 2**53: the field keeps its value
        refused[#refused + 1] = name
        refused[#refused + 1] = text
      else
        row.fields[name] = merged
      end
    end
  end
  row.c = row.c or it.x == true
  touch(row)
  if it.v then row.v = it.v end
  if it.k then seen_here[it.k] = true; keys[#keys + 1] = it.k end
  local job, start = load(k_job(it.r), 'job', it.r, ''), row.fields[START]
  if not job.exists then
    job.fields = {[STATUS] = '"Running"'}
    if start and start ~= 'null' then job.fields[START] = start end
    touch(job)
  elseif start and start ~= 'null' then
    local current = job.fields[START]
    if current == nil or current == 'null' or lt(start, current) then
      job.fields[START] = start
      touch(job)
    end
  end
  return 1, row, job, refused
end
local mark
local function put_job(it)
  local job = load(k_job(it.r), 'job', it.r, '')
  if it.n and job.exists then return 0, job end
  job.fields = it.f
  if it.x ~= nil then job.c = it.x end
  touch(job)
  if it.v then job.v = it.v end
  if it.m then mark = it.m end
  return 1, job
end
local function civil(z)  -- days since 1970-01-01 -> year, month, day (proleptic Gregorian)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local f = math.floor
  local yoe = f((doe - f(doe / 1460) + f(doe / 36524) - f(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d, m = doy - math.floor((153 * mp + 2) / 5) + 1, mp < 10 and mp + 3 or mp - 9
  return yoe + era * 400 + (m <= 2 and 1 or 0), m, d
end
local function run_id_at(s)  -- epoch seconds -> YYMMDD-HHMMSS (UTC)
  local days = math.floor(s / 86400)
  local y, m, d = civil(days)
  local t = s - days * 86400
  local hh, mm = math.floor(t / 3600), math.floor(t % 3600 / 60)
  return string.format('%02d%02d%02d-%02d%02d%02d', y % 100, m, d, hh, mm, t % 60)
end
local function reserve_job(it)  -- the first free second at or after it.e and past the mark
  local s, last = it.e, redis.call('GET', K_MARK)
  if last and tonumber(last) + 1 > s then s = tonumber(last) + 1 end
  it.r = run_id_at(s)
  while load(k_job(it.r), 'job', it.r, '').exists do s = s + 1; it.r = run_id_at(s) end
  it.n, it.m = true, s
  return put_job(it)
end
local out, items, token = {}, cjson.decode(ARGV[6]), ARGV[8]
if token and token ~= '' then
  if seen(token) then  -- this delivery or commit was applied before (its reply was lost): change nothing
    for i, it in ipairs(items) do
      local client = it.t == 'c'
      if it.t == 'm' then it.r = redis.call('GET', P .. 'idem-run:' .. token) end  -- the run it reserved
      local row
      if client then row = load(k_client(it.r, it.c), 'client', it.r, it.c)
      else row = load(k_job(it.r), 'job', it.r, '') end
      local r = reply(row)
      out[i] = {2, r[1], r[2], r[3], client and {} or redis.call('SMEMBERS', k_clients(it.r)), 0, {}, it.r}
    end
    return out
  end
  keys[#keys + 1] = token
end
for i, it in ipairs(items) do
  local done, row, job, refused
  if it.t == 'c' then done, row, job, refused = merge_client(it)
  elseif it.t == 'm' then done, row = reserve_job(it)
  else done, row = put_job(it) end
  local r = reply(row)
  local job_done = (job and job.exists and job.c) and 1 or 0
  local ids = it.t ~= 'c' and redis.call('SMEMBERS', k_clients(it.r)) or {}
  out[i] = {done, r[1], r[2], r[3], ids, job_done, refused or {}, it.r}
end
flush(RETENTION)
for _, key in ipairs(keys) do redis.call('SET', P .. 'idem:' .. key, IDEM_EXP, 'PX', IDEM_PX) end
if mark then
  redis.call('SET', K_MARK, string.format('%d', mark))
  if token and token ~= '' then  -- a re-sent reservation answers with this run, reserves no other
    for _, it in ipairs(items) do
      if it.t == 'm' then redis.call('SET', P .. 'idem-run:' .. token, it.r, 'PX', IDEM_PX) end
    end
  end
end
return out
"""
)

#: ARGV: prefix, status ('' for every job), limit. Newest Start Time first; drops index
#: entries of expired jobs. Returns {run, flat hash, client ids} per job.
LIST_JOBS = (
    _HEAD
    + r"""
local index, limit, out, start = ARGV[2] == '' and K_JOBS or k_status(ARGV[2]), tonumber(ARGV[3]), {}, 0
while #out < limit do
  local runs = redis.call('ZREVRANGE', index, start, start + limit - 1)
  if #runs == 0 then break end
  start = start + #runs
  for _, run in ipairs(runs) do
    local flat = redis.call('HGETALL', k_job(run))
    if #flat == 0 then
      redis.call('ZREM', index, run)
      start = start - 1
    elseif #out < limit then
      out[#out + 1] = {run, flat, redis.call('SMEMBERS', k_clients(run))}
    end
  end
end
return out
"""
)

#: ARGV: prefix, 'live' or 'dead', max due_at, limit. Returns {member, due_at, meta} per entry.
OUTBOX_READ = (
    _HEAD
    + r"""
local entries
if ARGV[2] == 'dead' then entries = redis.call('ZRANGE', K_DEAD, 0, -1, 'WITHSCORES')
else entries = redis.call('ZRANGEBYSCORE', K_OUTBOX, '-inf', ARGV[3], 'WITHSCORES', 'LIMIT', 0, ARGV[4]) end
local out = {}
for i = 1, #entries, 2 do
  out[#out + 1] = {entries[i], entries[i + 1], redis.call('HGET', K_META, entries[i]) or ''}
end
return out
"""
)

#: ARGV: prefix, then (member, version) pairs: removes entries still at that version.
OUTBOX_DONE = (
    _HEAD
    + r"""
for i = 2, #ARGV, 2 do
  local meta = redis.call('HGET', K_META, ARGV[i])
  if meta and string.match(meta, '^(%d+):') == ARGV[i + 1] then
    redis.call('HDEL', K_META, ARGV[i])
    redis.call('ZREM', K_OUTBOX, ARGV[i])
    redis.call('ZREM', K_DEAD, ARGV[i])
  end
end
return 0
"""
)

#: ARGV: prefix, member, the item's version, attempts, last error, due_at, error, dead (1/0).
OUTBOX_RETRY = (
    _HEAD
    + r"""
local member, v, a, e = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local meta = redis.call('HGET', K_META, member)
if meta then v, a, e = string.match(meta, '^(%d+):(%d+):(.*)$') end
if ARGV[7] ~= '' then a, e = string.format('%d', tonumber(a) + 1), ARGV[7] else a = '0' end
redis.call('HSET', K_META, member, v .. ':' .. a .. ':' .. e)
local from, to = K_DEAD, K_OUTBOX
if ARGV[8] == '1' then from, to = K_OUTBOX, K_DEAD end
redis.call('ZREM', from, member)
redis.call('ZADD', to, ARGV[6], member)
return 0
"""
)

#: ARGV: prefix. Makes every dead entry due now; returns how many.
OUTBOX_REVIVE = (
    _HEAD
    + r"""
local dead = redis.call('ZRANGE', K_DEAD, 0, -1)
for _, member in ipairs(dead) do redis.call('ZADD', K_OUTBOX, 0, member) end
redis.call('DEL', K_DEAD)
return #dead
"""
)

#: KEYS: the lease. ARGV: owner, now, now + ttl, PX (garbage collection only). 1 when held.
LEASE = r"""
local holder = redis.call('HMGET', KEYS[1], 'owner', 'expires')
if holder[1] and holder[1] ~= ARGV[1] and tonumber(holder[2]) > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

#: KEYS: the pacing slot. ARGV: now, rate, PX. Returns the seconds to wait ('0': taken).
TOKEN = r"""
local now = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if slot > now then return string.format('%.17g', slot - now) end
local next_slot = math.max(slot, now) + 1.0 / tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%.17g', next_slot), 'PX', ARGV[3])
return '0'
"""
