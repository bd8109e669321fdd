-- PATCH edit-post of the posts whose ids are listed in BENCH_IDS_FILE, in
-- turn, with the JSON body in BENCH_BODY_FILE: the connections edit
-- different posts, as different clients do.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS_FILE")) do
  ids[#ids + 1] = line
end
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
local body = file:read("*a")
file:close()
local index = 0
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

request = function()
  index = index % #ids + 1
  return wrk.format("PATCH", "/api/v1/posts/edit-post/" .. ids[index], nil, body)
end
