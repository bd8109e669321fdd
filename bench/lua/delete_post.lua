-- DELETE the posts whose ids are listed in BENCH_IDS_FILE, one per request;
-- each exists when it is deleted, so every answer should be 204.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS_FILE")) do
  ids[#ids + 1] = line
end
local index = 0
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")

request = function()
  index = index + 1
  if index > #ids then
    index = 1 -- out of posts: the rest are 404s and counted as non-2xx
  end
  return wrk.format("DELETE", "/api/v1/posts/delete-post/" .. ids[index])
end
