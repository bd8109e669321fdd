-- Shared by every script: after the run, print the figures as one JSON line.
-- "shed" counts 503 answers that a script chose to count (see login.lua):
-- load the service turned away on purpose, not errors. "rps" counts only
-- the other requests.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  local shed = 0
  for _, thread in ipairs(threads) do
    shed = shed + (thread:get("shed") or 0)
  end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"seconds":%.3f,"rps":%.2f,"p50_ms":%.3f,' ..
    '"p99_ms":%.3f,"max_ms":%.3f,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"timeouts":%d,"non_2xx":%d,"shed":%d}\n',
    summary.requests, seconds, (summary.requests - shed) / seconds,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.connect, e.read, e.write, e.timeout, e.status - shed,
    shed))
end
