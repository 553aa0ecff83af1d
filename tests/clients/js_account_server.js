// Register an app with eureka-js-client 4.5.0, heartbeat, fetch the registry (full, then
// deltas), print what it discovered, and unregister on SIGTERM/SIGINT.
//
// env: EUREKA_URL (default http://127.0.0.1:8761/eureka), APP_NAME (default account-server),
//      APP_PORT (default 9090), LOOKUP_APP (another app to print, default none),
//      INTERVAL_MS (heartbeat and fetch interval, default 30000), USE_DELTA (0 = full fetches
//      only; default: deltas). NODE_PATH must point at the node_modules holding the client.
//
// Every INTERVAL_MS it prints `seen ID IP:PORT STATUS` for each instance of APP_NAME and
// `found APP ID IP:PORT STATUS` for each instance of LOOKUP_APP in the client's cache (only UP
// instances: the client's default filter), and `registered` once registration succeeded.
const { Eureka } = require('eureka-js-client');

const base = (process.env.EUREKA_URL || 'http://127.0.0.1:8761/eureka').replace(/\/+$/, '');
const name = (process.env.APP_NAME || 'account-server').toLowerCase();
const port = Number(process.env.APP_PORT || 9090);
const lookup = (process.env.LOOKUP_APP || '').toUpperCase();
const interval = Number(process.env.INTERVAL_MS || 30000);

const client = new Eureka({
  instance: {
    instanceId: `127.0.0.1:${name}:${port}`,
    app: name.toUpperCase(),
    hostName: '127.0.0.1',
    ipAddr: '127.0.0.1',
    port: { $: port, '@enabled': true },
    vipAddress: name,
    statusPageUrl: `http://127.0.0.1:${port}/info`,
    healthCheckUrl: `http://127.0.0.1:${port}/health`,
    homePageUrl: `http://127.0.0.1:${port}/`,
    dataCenterInfo: {
      '@class': 'com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo',
      name: 'MyOwn',
    },
    metadata: { origin: 'eureka-js-client-test' },
  },
  eureka: {
    // Paths are appended to this URL: point it at the apps collection (.../apps/).
    serviceUrls: { default: [`${base}/apps/`] },
    heartbeatInterval: interval,
    registryFetchInterval: interval,
    maxRetries: 0,
  },
  shouldUseDelta: process.env.USE_DELTA !== '0',
});

client.start((err) => {
  if (err) {
    console.error('start failed:', err.message);
    process.exit(1);
  }
  console.log('registered');
});

const timer = setInterval(() => {
  client.getInstancesByAppId(name.toUpperCase()).forEach((i) => {
    console.log(`seen ${i.instanceId} ${i.ipAddr}:${i.port.$} ${i.status}`);
  });
  if (lookup) {
    client.getInstancesByAppId(lookup).forEach((i) => {
      console.log(`found ${lookup} ${i.instanceId} ${i.ipAddr}:${i.port.$} ${i.status}`);
    });
  }
}, interval);

function shutdown() {
  clearInterval(timer);
  client.stop((err) => {
    console.log(err ? `deregister failed: ${err.message}` : 'unregistered');
    process.exit(err ? 1 : 0);
  });
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
