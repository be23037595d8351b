-- One wrk script for every scenario; BENCH_DATA names a Lua file that returns the run's data
-- (tokens, paths), BENCH_MODE picks the scenario. Bodies and tokens change per request.
--   post:       POST /api/equity/orders, a resting crypto limit buy, a new client_order_id each time
--   floor_post: POST /api/floor/items, the same fields
--   get:        GET of data.gets[BENCH_SET] = {{path, token}, ...}, round robin
local data = dofile(os.getenv("BENCH_DATA"))
local mode = os.getenv("BENCH_MODE")
local set = os.getenv("BENCH_SET")
local run_id = os.getenv("BENCH_RUN") or "r"

local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
  table.insert(threads, thread)
end

local tokens, gets, n
-- X-Forwarded-Proto: what the TLS-terminating proxy in front of the service sets (SECURE_PROXY_SSL_HEADER).
local headers = {["Content-Type"] = "application/json", ["Accept"] = "application/json",
                 ["X-Forwarded-Proto"] = "https"}

function init(args)
  -- Each thread starts at another offset so that users are spread evenly over connections.
  counter = (tid or 1) * 7919
  if mode == "get" then
    gets = data.gets[set]
    n = #gets
  else
    tokens = data.post_tokens
    n = #tokens
  end
end

local post_path = {post = "/api/equity/orders", floor_post = "/api/floor/items"}

function request()
  counter = counter + 1
  if mode == "get" then
    local g = gets[(counter % n) + 1]
    headers["Authorization"] = "Bearer " .. g[2]
    return wrk.format("GET", g[1], headers, nil)
  end
  headers["Authorization"] = "Bearer " .. tokens[(counter % n) + 1]
  local body = string.format(
    '{"asset_class":"crypto","symbol":"BTC/USD","side":"buy","qty":0.0001,"order_type":"limit",' ..
    '"limit_price":40000,"client_order_id":"%s-%d-%d"}', run_id, tid or 0, counter)
  if mode == "floor_post" then
    body = string.format('{"symbol":"BTC/USD","side":"buy","qty":0.0001,"limit_price":40000,' ..
                         '"client_order_id":"%s-%d-%d"}', run_id, tid or 0, counter)
  end
  return wrk.format("POST", post_path[mode], headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"err_connect":%d,"err_read":%d,"err_write":%d,"err_timeout":%d,"err_status":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout, e.status))
end
