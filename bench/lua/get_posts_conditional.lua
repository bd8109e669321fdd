-- GET get-posts with If-None-Match: the tag in BENCH_TAG, answered 304.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["If-None-Match"] = os.getenv("BENCH_TAG")
