// npm web-push-testing (a push service emulator we did not write) served over HTTPS on
// 127.0.0.1, so its endpoints are https:// URLs as real push services hand out. On top of what
// the emulator checks (VAPID ES256 signature with the subscription's applicationServerKey, the
// aes128gcm encryption by decrypting with http_ece), this checks what real push services also
// check about the VAPID JWT (RFC 8292 2): aud is this service's origin, exp is at most 24 hours
// ahead, sub is a mailto: or https: URI.
//
//   node webpush_service.js PORT CERT KEY     prints "listening on PORT" when ready
'use strict';
const fs = require('fs');
const https = require('https');
const WebPushTestingServer = require('web-push-testing/src/server.js');
const {PushApiModel} = require('web-push-testing/src/PushApiModel.js');

const [port, certFile, keyFile] = [Number(process.argv[2]), process.argv[3], process.argv[4]];
const origin = `https://127.0.0.1:${port}`;
const model = new PushApiModel();
const server = new WebPushTestingServer(model, port);
model.notifyUrl = `${origin}/notify/`;
const app = server._app;

function claimsProblem(authorization) {
  const m = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(authorization || '');
  if (!m) return 'Authorization is not "vapid t=<jwt>, k=<key>"';
  const parts = m[1].split('.');
  if (parts.length !== 3) return 'the VAPID token is not a compact JWS';
  let header, claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch (e) {
    return 'the VAPID token does not decode: ' + e.message;
  }
  if (header.alg !== 'ES256') return 'alg must be ES256';
  if (Buffer.from(parts[2], 'base64url').length !== 64) return 'the ES256 signature must be raw r||s (64 bytes)';
  if (claims.aud !== origin) return `aud ${claims.aud} is not ${origin}`;
  const now = Date.now() / 1000;
  if (typeof claims.exp !== 'number' || claims.exp <= now || claims.exp > now + 86400 + 60) {
    return `exp ${claims.exp} must be in the next 24 hours`;
  }
  if (typeof claims.sub !== 'string' || !/^(mailto:|https:)/.test(claims.sub)) return 'sub must be mailto: or https:';
  return null;
}

// Before the emulator's own routes: requests to /notify/ are checked, then passed on.
app.post('/notify/:clientHash', (req, res, next) => {
  const problem = claimsProblem(req.get('Authorization'));
  if (problem) return res.status(403).send({error: {message: 'VAPID: ' + problem}});
  const ttl = req.get('TTL');
  if (!/^\d+$/.test(ttl || '')) return res.status(400).send({error: {message: 'TTL header missing'}});
  const urgency = req.get('Urgency');
  if (urgency && !['very-low', 'low', 'normal', 'high'].includes(urgency)) {
    return res.status(400).send({error: {message: 'bad Urgency ' + urgency}});
  }
  const topic = req.get('Topic');
  if (topic !== undefined && !/^[A-Za-z0-9_-]{1,32}$/.test(topic)) {
    return res.status(400).send({error: {message: 'bad Topic ' + topic}});
  }
  if (req.body && req.body.length > 4096) return res.status(413).send({error: {message: 'payload too large'}});
  if (req.params.clientHash.startsWith('busy')) {
    res.set('Retry-After', '3');
    return res.status(429).send({error: {message: 'slow down'}});
  }
  next();
});
server.setRequestHandlers();

https.createServer({cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile)}, app)
  .listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
