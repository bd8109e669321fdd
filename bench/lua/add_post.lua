-- POST add-post with the JSON body in the file BENCH_BODY_FILE.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
