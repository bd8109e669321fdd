"""The Redis scripts that keep a cached listing up to date as posts are added.

A listing's tag entry (``posts.cache``) holds, after its generation, a
first line ``<last id> <link>`` and then one line per post at the end of
the listing (at most ``TAIL``): ``<id> <version> <offset> <link before>``,
where ``offset`` is where the post's JSON starts in the listing's bytes and
``link before`` is the tag's chain up to the post before it
(``posts.tags``). With them a script can put a post in its place in the
bytes and the tag without reading the listing: at the end, or a few posts
from it when two adds committed in the other order than their ids.

Ids compare as decimal strings (Lua's numbers are doubles).
"""

# Posts at the end of a listing whose places a script knows. Adds that
# commit out of the order of their ids land within a few posts of the end.
TAIL = 32

COMMON = r"""
local function less(a, b) return #a < #b or (#a == #b and a < b) end

-- The tag's chain after one more post, as posts.tags.chain computes it.
local function linked(link, id, version)
  return redis.sha1hex(link .. ':' .. id .. '.' .. version)
end

local function parse(value, head)
  if not value or string.sub(value, 1, #head) ~= head then return nil end
  local lines = {}
  for line in string.gmatch(string.sub(value, #head + 1), '[^\n]+') do
    lines[#lines + 1] = line
  end
  local last, link = string.match(lines[1] or '', '^(%d+) (%x+)$')
  if not last then return nil end
  local state = {last = last, link = link, tail = {}}
  for i = 2, #lines do
    local id, version, offset, before =
      string.match(lines[i], '^(%d+) (%d+) (%d+) (%x+)$')
    if not id then return nil end
    state.tail[#state.tail + 1] =
      {id = id, version = version, offset = tonumber(offset), before = before}
  end
  return state
end

local function serialized(state)
  local parts = {state.last .. ' ' .. state.link}
  for _, e in ipairs(state.tail) do
    parts[#parts + 1] = e.id .. ' ' .. e.version .. ' ' .. e.offset .. ' ' .. e.before
  end
  return table.concat(parts, '\n')
end

-- Put a post in the listing: in its bytes at ``key`` after ``h`` bytes of
-- head when ``size`` (the bytes' length) is not nil, and in ``state``.
-- Returns the new size (or 0 without bytes), or nil when its place is not
-- known; nothing has changed then.
local function add(key, h, size, state, id, version, json, tail_max)
  local tail = state.tail
  if less(state.last, id) then
    local offset = size or 0
    if size == 2 then
      redis.call('SETRANGE', key, h + 1, json .. ']')
      offset, size = 1, 2 + #json
    elseif size then
      redis.call('SETRANGE', key, h + size - 1, ',' .. json .. ']')
      size = size + 1 + #json
    end
    tail[#tail + 1] = {id = id, version = version, offset = offset, before = state.link}
    state.link = linked(state.link, id, version)
    state.last = id
  else
    local p
    for i, e in ipairs(tail) do
      if e.id == id then return size or 0 end -- listed already
      if not p and less(id, e.id) then p = i end
    end
    if not p or (p == 1 and tail[1].offset ~= 1) then return nil end
    local o = tail[p].offset
    if size then
      local rest = redis.call('GETRANGE', key, h + o, h + size - 2)
      redis.call('SETRANGE', key, h + o, json .. ',' .. rest .. ']')
      size = size + 1 + #json
    end
    local entry = {id = id, version = version, offset = o, before = tail[p].before}
    local link = linked(entry.before, id, version)
    for i = p, #tail do
      tail[i].offset = tail[i].offset + 1 + #json
      tail[i].before = link
      link = linked(link, tail[i].id, tail[i].version)
    end
    table.insert(tail, p, entry)
    state.link = link
  end
  while #tail > tail_max do table.remove(tail, 1) end
  return size or 0
end

-- The listing's bytes' size if ``key`` holds bytes under ``head``, else nil.
local function listed(key, head)
  if redis.call('GETRANGE', key, 0, #head - 1) ~= head then return nil end
  return redis.call('STRLEN', key) - #head
end
"""

# KEYS: generation, tag, listing, log, rebuild claim. ARGV: new generation,
# post id, version, the post's JSON, the listing's byte limit, its ttl, the
# generation's ttl, TAIL, the largest post logged.
# A current cached listing gets the post in its place, under the new
# generation. Otherwise, while a rebuild of the listing is under way (its
# claim is held), the add is logged for it (STORE); either way the
# generation is replaced, as after any change. An add before the claim is
# not logged: a rebuild that began before it is then not stored.
APPEND = (
    COMMON
    + r"""
local done = 0
local gen = redis.call('GET', KEYS[1])
if gen then
  local head = gen .. '\n'
  local state = parse(redis.call('GET', KEYS[2]), head)
  if state then
    local size = listed(KEYS[3], head)
    if size and #gen ~= #ARGV[1] then
      redis.call('DEL', KEYS[3])
      size = nil
    end
    local after = add(KEYS[3], #head, size, state, ARGV[2], ARGV[3], ARGV[4],
                      tonumber(ARGV[8]))
    if after then
      if size then
        if after > tonumber(ARGV[5]) then
          redis.call('DEL', KEYS[3])
        else
          redis.call('SETRANGE', KEYS[3], 0, ARGV[1])
          redis.call('EXPIRE', KEYS[3], ARGV[6])
        end
      end
      redis.call('SET', KEYS[2], ARGV[1] .. '\n' .. serialized(state), 'EX', ARGV[6])
      done = 1
    end
  end
  if done == 0 and #ARGV[4] <= tonumber(ARGV[9])
      and redis.call('EXISTS', KEYS[5]) == 1 then
    redis.call('LPUSH', KEYS[4],
      gen .. ' ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
    redis.call('LTRIM', KEYS[4], 0, 63)
    redis.call('EXPIRE', KEYS[4], ARGV[6])
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[7])
return done
"""
)

# KEYS: generation, tag, listing, log, rebuild claim. ARGV: the generation read before
# the query, the tag entry, the bytes ('' when too large to cache), the
# ttl, the byte limit, TAIL.
# Stores the listing under the current generation if nothing but adds
# changed it since the query (the log holds them, and they are put in
# place); after any other change, or with a gap in the log, nothing is
# stored: the listing read is stale.
STORE = (
    COMMON
    + r"""
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
local chain = {}
if cur ~= ARGV[1] then
  local want = cur
  for _, e in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
    local prev, new, id, version, json =
      string.match(e, '^(%x+) (%x+) (%d+) (%d+) (.*)$')
    if new == want then
      chain[#chain + 1] = {id, version, json}
      want = prev
      if want == ARGV[1] then break end
    end
  end
  if want ~= ARGV[1] then return 0 end
end
local head = cur .. '\n'
local state = parse(head .. ARGV[2], head)
if not state then return 0 end
local size = nil
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[3], head .. ARGV[3], 'EX', ARGV[4])
  size = #ARGV[3]
end
for i = #chain, 1, -1 do
  local c = chain[i]
  size = add(KEYS[3], #head, size, state, c[1], c[2], c[3], tonumber(ARGV[6]))
  if not size then
    redis.call('DEL', KEYS[3])
    return 0
  end
  if ARGV[3] == '' then size = nil end
end
if size and size > tonumber(ARGV[5]) then redis.call('DEL', KEYS[3]) end
redis.call('SET', KEYS[2], head .. serialized(state), 'EX', ARGV[4])
return 1
"""
)

# What READ_WITH_COPY found of a listing.
NOT_CACHED, SAME, APPENDED, OTHER = 0, 1, 2, 3

# KEYS: any keys of the user read as by MGET, then the generation, tag and
# listing of a listing an instance holds a copy of (``posts.copies``),
# last. ARGV: the copy's link and its size in bytes.
# Returns the values of every key but the listing, all read at once, and
# then what the listing is to the copy, a kind and bytes: 0, no listing is
# cached under the generation (''); 1, the copy is the listing (''); 2, the
# listing is the copy with posts appended (its bytes from the copy's
# closing bracket on); 3, neither (the whole entry, generation first).
READ_WITH_COPY = (
    COMMON
    + r"""
local n = #KEYS
local values = redis.call('MGET', unpack(KEYS, 1, n - 1))
local gen, tag = values[n - 2], values[n - 1]
local kind, bytes = 0, ''
local head = gen and gen .. '\n'
if gen and tag and string.sub(tag, 1, #head) == head then
  local first = string.match(tag, '^%d+ (%x+)', #head + 1)
  if first == ARGV[1] then
    kind = 1
  elseif first and listed(KEYS[n], head) then
    local state = parse(tag, head)
    local size = tonumber(ARGV[2])
    local start = size
    if size == 2 then start = 1 end
    kind, bytes = 3, nil
    for _, e in ipairs(state and state.tail or {}) do
      if e.before == ARGV[1] then
        if e.offset == start then
          kind = 2
          bytes = redis.call('GETRANGE', KEYS[n], #head + size - 1, -1)
        end
        break
      end
    end
    if not bytes then bytes = redis.call('GET', KEYS[n]) end
  end
end
values[n] = kind
values[n + 1] = bytes
return values
"""
)
