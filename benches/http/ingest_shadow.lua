-- wrk script: other reducer calls on the database being resynced (ingest_shadow).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("EPOCH_BENCH_TOKEN")
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, wrk.path, nil, '["thing-' .. (counter % 500) .. '","s",' .. counter .. ',"{}"]')
end
