-- GET /hello/<existing user>
request = greet_request
