-- wrk script: every request is a POST of the same 1 MiB body (bytes 0..255
-- repeated), which the upload workload answers with its length and SHA-256.
-- Also counts, at the end, the requests slower than WRK_SLOW_US (see slow.lua).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
local chunk = {}
for i = 0, 255 do chunk[#chunk + 1] = string.char(i) end
wrk.body = string.rep(table.concat(chunk), 4096)   -- 256 * 4096 = 1048576 bytes

-- WRK_SLOW_US: thresholds in microseconds, comma-separated (default 500000)
local thresholds = {}
for t in string.gmatch(os.getenv("WRK_SLOW_US") or "500000", "%d+") do
  thresholds[#thresholds + 1] = tonumber(t)
end

-- Requests slower than `threshold`. Exact when wrk's record is small enough to
-- walk (latency(i) rescans it from the start, so a walk costs distinct values
-- times range); else estimated from wrk's percentiles by bisection, scaled to
-- the completed requests (within about 2 %), and marked with a "~".
local function over(latency, total, threshold)
  if latency.max <= threshold then return 0, "" end
  local distinct = #latency
  if distinct * (latency.max - latency.min + 1) <= 300000000 then
    local slow = 0
    for i = 1, distinct do
      local value, count = latency(i)
      if value > threshold then slow = slow + count end
    end
    return slow, ""
  end
  local lo, hi = 0.0, 100.0    -- percentile(lo) <= threshold < percentile(hi)
  for _ = 1, 60 do
    local mid = (lo + hi) / 2
    if latency:percentile(mid) > threshold then hi = mid else lo = mid end
  end
  return math.floor(total * (100.0 - hi) / 100.0 + 0.5), "~"
end

function done(summary, latency, requests)
  for _, threshold in ipairs(thresholds) do
    local slow, mark = over(latency, summary.requests, threshold)
    io.write(string.format("Slow requests: %s%d over %d us, max %d us\n",
                           mark, slow, threshold, latency.max))
  end
end
