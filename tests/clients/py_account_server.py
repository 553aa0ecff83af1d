#!/usr/bin/env python3
"""Register an app with py-eureka-client 0.13.3, heartbeat, and unregister on
SIGTERM/SIGINT (then exit at once, so its heartbeat thread cannot re-register).

env: EUREKA_URL (default http://127.0.0.1:8761/eureka), APP_NAME (default
     account-server), APP_PORT (default 9090), INTERVAL (heartbeat seconds, default 30),
     LOOKUP_APP (another app whose instances to print too, default none)

Every INTERVAL it prints `seen ID IP:PORT STATUS` for each instance of APP_NAME and
`found APP ID IP:PORT STATUS` for each instance of LOOKUP_APP in the client's own registry
copy (fetched as XML, full and delta), so a test can see what the client discovered.
"""
import os
import signal
import sys
import threading

import py_eureka_client.eureka_client as eureka_client

EUREKA_URL = os.environ.get("EUREKA_URL", "http://127.0.0.1:8761/eureka")
APP_NAME = os.environ.get("APP_NAME", "account-server")
APP_PORT = int(os.environ.get("APP_PORT", "9090"))
INTERVAL = int(os.environ.get("INTERVAL", "30"))
LOOKUP_APP = os.environ.get("LOOKUP_APP", "")

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
signal.signal(signal.SIGINT, lambda *_: stop.set())

client = eureka_client.init(
    eureka_server=EUREKA_URL,
    app_name=APP_NAME,
    instance_ip="127.0.0.1",
    instance_host="127.0.0.1",
    instance_port=APP_PORT,
    renewal_interval_in_secs=INTERVAL,
    duration_in_secs=3 * INTERVAL,
    metadata={"origin": "py-eureka-client-test"},
)
print("registered", flush=True)

# Print what the client's own registry copy (fetched as XML) holds for our app,
# so a test can see that the client parses the server's documents.
while not stop.wait(INTERVAL):
    for inst in client.applications.get_application(APP_NAME.upper()).instances:
        print(f"seen {inst.instanceId} {inst.ipAddr}:{inst.port.port} {inst.status}", flush=True)
    if LOOKUP_APP:
        for inst in client.applications.get_application(LOOKUP_APP.upper()).instances:
            print(f"found {LOOKUP_APP.upper()} {inst.instanceId} {inst.ipAddr}:{inst.port.port} {inst.status}", flush=True)

# stop() re-registers with status DOWN (POST) and then cancels (DELETE).
eureka_client.stop()
print("unregistered", flush=True)
os._exit(0)
