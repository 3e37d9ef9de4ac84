-- wrk script of bench.harness.run_load: every connection sends its own prepared requests.
--
-- wrk runs with as many threads as connections, so each thread drives exactly one
-- connection: request() and response() alternate, and the answer to a request is known.
-- Arguments (after "--"): the directory of the request files and the deadline on
-- CLOCK_MONOTONIC (Python's time.monotonic()). Thread k reads requests-<k> (each request
-- as "<length>\n<raw HTTP bytes>"), sends them in order and stops after the answer that
-- ends its list or arrives past the deadline: no request is left in flight, so every
-- write the server committed has been answered. It stops on the connection wrk opens after
-- that answer, by sending the stop request there (never leaving it idle, see request()).
-- On stopping it creates done-<k>. The
-- done() hook prints one JSON line (prefix DTX-WRK-JSON): per thread, the status (0: the
-- connection failed) and latency of each request sent, the first send and last answer
-- times; wrk's own summary and latency percentiles.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } dtx_wrk_timespec;
int clock_gettime(int clk_id, dtx_wrk_timespec *tp);
]]
local timespec = ffi.new("dtx_wrk_timespec")
local CLOCK_MONOTONIC = 1

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, timespec)
  return tonumber(timespec.tv_sec) + tonumber(timespec.tv_nsec) * 1e-9
end

-- setup and done run in the main environment ---------------------------------------------

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function done(summary, latency, requests)
  local parts = {}
  for _, thread in ipairs(threads) do
    local statuses = thread:get("statuses") or {}
    local latencies = thread:get("latencies") or {}
    local status = {}
    local lat = {}
    for i = 1, thread:get("sent") or 0 do
      status[i] = statuses[i] or -1  -- -1: still in flight when wrk stopped the thread
      lat[i] = string.format("%.6f", latencies[i] or 0)
    end
    table.insert(parts, string.format(
      '{"id":%d,"first":%.6f,"last":%.6f,"finished":%s,"statuses":[%s],"latencies":[%s]}',
      thread:get("id"), thread:get("first_sent") or 0, thread:get("last_answered") or 0,
      tostring(thread:get("finished") == true), table.concat(status, ","),
      table.concat(lat, ",")))
  end
  local e = summary.errors
  io.write(string.format(
    'DTX-WRK-JSON {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d},"latency_us":{"p50":%d,"p90":%d,"p99":%d,' ..
    '"p999":%d,"max":%d},"threads":[%s]}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, table.concat(parts, ",")))
  io.flush()
end

-- each thread's own environment -------------------------------------------------------------

local requests = {}
local directory
local deadline
local is_verifying = false
local is_pending = false
local started_at = 0
sent = 0
statuses = {}
latencies = {}
first_sent = nil
last_answered = nil
finished = false

-- a harmless request, sent only when a connection failed after the list's last request
local STOP_REQUEST = "GET /__wrk_stopped HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

function init(args)
  directory = args[1]
  deadline = tonumber(args[2])
  local file = assert(io.open(directory .. "/requests-" .. id, "rb"))
  while true do
    local line = file:read("*l")
    if line == nil then break end
    table.insert(requests, file:read(tonumber(line)))
  end
  file:close()
  -- wrk calls request() once in the first thread's environment to check the request's
  -- syntax, before that thread runs: that call sends nothing
  is_verifying = id == 1
end

local function finish()
  if finished then return end
  finished = true
  local marker = io.open(directory .. "/done-" .. id, "w")
  if marker then marker:close() end
  wrk.thread:stop()
end

function request()
  if directory == nil then return STOP_REQUEST end
  if is_verifying then
    is_verifying = false
    return requests[1] or STOP_REQUEST
  end
  if is_pending then
    -- wrk reconnected without an answer: the connection failed (read error or closed)
    statuses[sent] = 0
    latencies[sent] = now() - started_at
    is_pending = false
  end
  -- the list is done (or the time is up): stop on this connection with a complete request.
  -- A thread never stops in response(): wrk reconnects after every answer (sync workers close
  -- the connection), and a connection opened by a stopped thread stays idle until wrk exits.
  -- A gunicorn sync worker that accepts an idle connection waits for its request until
  -- gunicorn kills it (--timeout, 60 s), and wrk exits only when every thread has stopped:
  -- once the sync workers have each taken an idle connection of a thread that ran out, the
  -- other threads' requests queued behind them wait that long.
  if sent >= #requests or (sent > 0 and now() >= deadline) then
    finish()
    return STOP_REQUEST
  end
  sent = sent + 1
  started_at = now()
  if first_sent == nil then first_sent = started_at end
  is_pending = true
  return requests[sent]
end

function response(status, headers, body)
  local t = now()
  if not is_pending then return end
  is_pending = false
  statuses[sent] = status
  latencies[sent] = t - started_at
  last_answered = t
end
