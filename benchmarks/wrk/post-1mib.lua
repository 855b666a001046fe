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

function done(summary, latency, requests)
  for _, threshold in ipairs(thresholds) do
    local slow = 0
    for i = 1, #latency do
      local value, count = latency(i)
      if value > threshold then slow = slow + count end
    end
    io.write(string.format("Slow requests: %d over %d us, max %d us\n",
                           slow, threshold, latency.max))
  end
end
