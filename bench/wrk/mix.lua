-- 90% GET, 10% PUT
function request()
  if math.random(1, 10) == 1 then
    return save_request()
  end
  return greet_request()
end
