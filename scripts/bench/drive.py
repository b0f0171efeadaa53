"""Drives a server for scripts/http-cost.sh: waits until it is ready, sets
up sku-000000, then sends N reservations one after another on one
keep-alive connection. Usage: drive.py HOST PORT N MODE (MODE hello: the
trivial handler, which is ready at once and answers anything)."""
import http.client, sys, time

host, port, n, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
ready = "/healthz" if mode == "hello" else "/readyz"
for _ in range(600):
    try:
        c = http.client.HTTPConnection(host, port)
        c.request("GET", ready)
        r = c.getresponse()
        r.read()
        if r.status == 200 or mode == "hello":
            break
    except OSError:
        pass
    time.sleep(0.1)
else:
    sys.exit("the server never became ready")
c = http.client.HTTPConnection(host, port)
c.request("PUT", "/v1/skus/sku-000000", body=b'{"stock":1000000000}',
          headers={"Content-Type": "application/json"})
c.getresponse().read()
for i in range(n):
    body = ('{"customer_id":"c-%d-%d","items":[{"sku":"sku-000000","qty":1}]}'
            % (i * 7919 % 1000000007, i)).encode()
    c.request("POST", "/v1/reservations", body=body, headers={"Content-Type": "application/json"})
    r = c.getresponse()
    r.read()
    if r.status not in (200, 201):
        sys.exit(f"reservation {i} answered {r.status}")
