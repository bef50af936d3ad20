-- wrk script: POST a multipart/form-data upload whose body was written to a file by bench/run.py.
local file = assert(io.open(os.getenv("BENCH_UPLOAD_BODY"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. os.getenv("BENCH_BOUNDARY")
