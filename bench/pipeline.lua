-- wrk: 16 requests per write (TechEmpower's plaintext pipelining).
-- usage: wrk -s bench/pipeline.lua URL  (the path of URL is requested)
init = function(args)
  local r = {}
  for i = 1, 16 do
    r[i] = wrk.format(nil, wrk.path)
  end
  req = table.concat(r)
end

request = function()
  return req
end
