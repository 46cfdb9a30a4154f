-- wrk script: POST bank.transfer_fast between 1,000 accounts, spread over connections.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("EPOCH_BENCH_TOKEN")
local counter = 0
request = function()
  counter = counter + 1
  local from = counter % 1000
  local to = (counter * 7 + 1) % 1000
  if to == from then to = (to + 1) % 1000 end
  return wrk.format(nil, wrk.path, nil, "[" .. from .. "," .. to .. ",1]")
end
