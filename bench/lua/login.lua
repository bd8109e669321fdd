-- POST login with BENCH_EMAIL and BENCH_PASSWORD, as a client that honours
-- Retry-After: a 503 (every password-hash slot busy) is counted as "shed",
-- and a request after it is sent one second later instead of at once.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}',
  os.getenv("BENCH_EMAIL"), os.getenv("BENCH_PASSWORD"))

shed = 0
local owed_waits = 0

function response(status, headers, body)
  if status == 503 then
    shed = shed + 1
    owed_waits = owed_waits + 1
  end
end

function delay()
  if owed_waits > 0 then
    owed_waits = owed_waits - 1
    return 1000
  end
  return 0
end
