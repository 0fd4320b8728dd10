-- wrk script: POSTs one Open Inference Protocol v2 request body (the file named by the
-- environment variable GPUCAP_BODY) over and over, and prints the run's figures as one JSON line
-- prefixed "WRK_JSON " so the bench script can pick it out of wrk's own report. With GPUCAP_KEY set,
-- every request carries it as an API key (Authorization: Bearer).
local f = assert(io.open(os.getenv("GPUCAP_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("GPUCAP_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_ms": %.3f, "p99_ms": %.3f, ' ..
    '"socket_errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.connect + e.read + e.write + e.timeout, e.status))
end
