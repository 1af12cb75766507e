-- PUT /hello/<existing user>: an upsert that updates the row
request = save_request
