-- POST login with BENCH_EMAIL and BENCH_PASSWORD. A 503 is a login turned
-- away because every password-hash slot was busy: counted as "shed".
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}',
  os.getenv("BENCH_EMAIL"), os.getenv("BENCH_PASSWORD"))

shed = 0

function response(status, headers, body)
  if status == 503 then
    shed = shed + 1
  end
end
