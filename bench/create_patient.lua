-- wrk script: POST /patients with a small patient record.
wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"firstName": "Bench", "lastName": "Mark", "dateOfBirth": "1990-05-17", "allergies": ["dust"]}'
