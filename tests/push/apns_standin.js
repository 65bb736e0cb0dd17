// A stand-in for APNs on 127.0.0.1, speaking HTTP/2 over TLS only (ALPN h2, no HTTP/1.1),
// checking what APNs checks and answering with its real reasons.
//
//   node apns_standin.js PORT P8_KEY KEY_ID TEAM_ID TOPIC LOG CERT KEY
//                                                    prints "listening on PORT" when ready
//
// Checks: POST /3/device/<hex token>; authorization "bearer <JWT>" signed ES256 (raw r||s) by
// the key, kid = KEY_ID, iss = TEAM_ID, iat not older than an hour (ExpiredProviderToken) and a
// new token not within 20 minutes of the previous one (TooManyProviderTokenUpdates, by iat);
// apns-topic = TOPIC, apns-push-type, apns-priority 5 or 10, apns-expiration, apns-id a UUID,
// apns-collapse-id at most 64 bytes, a JSON payload with "aps" of at most 4096 bytes.
// Device tokens choose the answer: dead* 410 Unregistered, bad0* 400 BadDeviceToken,
// 0429* 429 TooManyRequests, 0500* 500 InternalServerError, 0503* 503 ServiceUnavailable.
// Every request (and every new HTTP/2 session) is appended to LOG as one JSON line.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http2 = require('http2');

const [port, keyFile, keyId, teamId, topic, logFile, certFile, tlsKeyFile] = process.argv.slice(2);
const publicKey = crypto.createPublicKey(fs.readFileSync(keyFile));
const log = (entry) => fs.appendFileSync(logFile, JSON.stringify(entry) + '\n');
let lastToken = null;
let lastIat = null;

function tokenProblem(authorization) {
  const m = /^bearer (\S+)$/.exec(authorization || '');
  if (!m) return [403, 'MissingProviderToken'];
  const parts = m[1].split('.');
  if (parts.length !== 3) return [403, 'InvalidProviderToken'];
  let header, claims;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url'));
    claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  } catch {
    return [403, 'InvalidProviderToken'];
  }
  if (header.alg !== 'ES256' || header.kid !== keyId || claims.iss !== teamId) return [403, 'InvalidProviderToken'];
  const ok = crypto.verify('sha256', Buffer.from(parts[0] + '.' + parts[1]),
    {key: publicKey, dsaEncoding: 'ieee-p1363'}, Buffer.from(parts[2], 'base64url'));
  if (!ok) return [403, 'InvalidProviderToken'];
  if (typeof claims.iat !== 'number' || claims.iat < Date.now() / 1000 - 3600) return [403, 'ExpiredProviderToken'];
  if (m[1] !== lastToken) {
    if (lastIat !== null && claims.iat - lastIat < 20 * 60) return [429, 'TooManyProviderTokenUpdates'];
    lastToken = m[1];
    lastIat = claims.iat;
  }
  return null;
}

const server = http2.createSecureServer({cert: fs.readFileSync(certFile), key: fs.readFileSync(tlsKeyFile)});
server.on('session', () => log({session: true}));
server.on('stream', (stream, headers) => {
  const chunks = [];
  stream.on('data', (c) => chunks.push(c));
  stream.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    log({path: headers[':path'], headers, body});
    const reply = (status, reason, extra = {}) => {
      const h = {':status': status, 'apns-id': headers['apns-id'] || crypto.randomUUID().toUpperCase(), ...extra};
      if (reason) {
        h['content-type'] = 'application/json';
        stream.respond(h);
        stream.end(JSON.stringify(status === 410 ? {reason, timestamp: Date.now()} : {reason}));
      } else {
        stream.respond(h, {endStream: true});
      }
    };
    const m = /^\/3\/device\/([0-9A-Fa-f]+)$/.exec(headers[':path'] || '');
    if (headers[':method'] !== 'POST') return reply(405, 'MethodNotAllowed');
    if (!m) return reply(400, 'BadPath');
    const problem = tokenProblem(headers.authorization);
    if (problem) return reply(problem[0], problem[1]);
    if (!headers['apns-topic']) return reply(400, 'MissingTopic');
    if (headers['apns-topic'] !== topic) return reply(400, 'DeviceTokenNotForTopic');
    if (!['alert', 'background', 'voip', 'complication', 'fileprovider', 'mdm', 'location', 'liveactivity', 'pushtotalk']
      .includes(headers['apns-push-type'])) return reply(400, 'InvalidPushType');
    if (!['5', '10'].includes(headers['apns-priority'])) return reply(400, 'BadPriority');
    if (!/^\d+$/.test(headers['apns-expiration'] || '')) return reply(400, 'BadExpirationDate');
    if (!/^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$/.test(headers['apns-id'] || '')) {
      return reply(400, 'BadMessageId');
    }
    if (headers['apns-collapse-id'] !== undefined && Buffer.byteLength(headers['apns-collapse-id']) > 64) {
      return reply(400, 'BadCollapseId');
    }
    if (Buffer.byteLength(body) > 4096) return reply(413, 'PayloadTooLarge');
    let payload;
    try {
      payload = JSON.parse(body);
    } catch {
      return reply(400, 'PayloadEmpty');
    }
    if (!payload || typeof payload.aps !== 'object') return reply(400, 'PayloadEmpty');
    const t = m[1].toLowerCase();
    if (t.startsWith('dead')) return reply(410, 'Unregistered');
    if (t.startsWith('bad0')) return reply(400, 'BadDeviceToken');
    if (t.startsWith('0429')) return reply(429, 'TooManyRequests', {'retry-after': '5'});
    if (t.startsWith('0500')) return reply(500, 'InternalServerError');
    if (t.startsWith('0503')) return reply(503, 'ServiceUnavailable');
    reply(200, null);
  });
});
server.listen(Number(port), '127.0.0.1', () => console.log(`listening on ${port}`));
