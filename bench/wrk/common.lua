-- Shared by every wrk workload of bench/run (prepended to it): the users bench/run loaded,
-- request builders, optional pacing, and one machine-readable summary line at the end.

local users = tonumber(os.getenv("BENCH_USERS") or "100000")

-- The same name as the SQL that loaded the users: "u" and six digits spelt a..j.
function username(number)
  local name = string.format("%06d", number):gsub("%d", function(digit)
    return string.char(97 + tonumber(digit))
  end)
  return "u" .. name
end

local function random_user()
  return username(math.random(1, users))
end

function greet_request()
  return wrk.format("GET", "/hello/" .. random_user())
end

local json = { ["Content-Type"] = "application/json" }

function save_request()
  local body = string.format('{"dateOfBirth":"19%02d-%02d-%02d"}',
    math.random(50, 99), math.random(1, 12), math.random(1, 28))
  return wrk.format("PUT", "/hello/" .. random_user(), json, body)
end

-- A fixed seed per thread: every run sends the same sequence of users.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

function init(args)
  math.randomseed(seed)
end

-- BENCH_DELAY_MS paces each connection (a request, then this pause), for a fixed lower rate.
local pause = tonumber(os.getenv("BENCH_DELAY_MS") or "")
if pause then
  function delay()
    return pause
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "seconds": %.3f, "p50_us": %.0f, "p99_us": %.0f, "p999_us": %.0f, '
      .. '"socket_errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    errors.connect + errors.read + errors.write + errors.timeout, errors.status))
end
