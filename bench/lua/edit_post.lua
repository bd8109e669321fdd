-- PATCH edit-post (the path given to wrk) with the JSON body in BENCH_BODY_FILE.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.method = "PATCH"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
