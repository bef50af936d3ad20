-- wrk script: PUT /patients/{id} with If-Match, as a client that edits a record does.
-- Run with as many threads as connections: each thread then has one connection, edits
-- a patient of its own (BENCH_PATIENTS, comma-separated ids), and sends back the ETag
-- its last answer carried, so every write names the current version and none is a 412.
-- BENCH_CONDITIONAL=0 sends the same PUTs without If-Match, for comparison.
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("index", counter)
end

function init(args)
  local ids = {}
  for id in string.gmatch(os.getenv("BENCH_PATIENTS"), "[^,]+") do
    ids[#ids + 1] = id
  end
  patient = ids[(index - 1) % #ids + 1]
  etag = '"1"'
  conditional = os.getenv("BENCH_CONDITIONAL") ~= "0"
  body = '{"firstName": "Bench", "lastName": "Mark", "dateOfBirth": "1990-05-17", "notes": "edited"}'
end

function request()
  local headers = {["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
                   ["Content-Type"] = "application/json"}
  if conditional then
    headers["If-Match"] = etag
  end
  return wrk.format("PUT", "/patients/" .. patient, headers, body)
end

function response(status, headers, body)
  if headers["ETag"] then
    etag = headers["ETag"]
  end
end
