// A stand-in for FCM HTTP v1 and Google's OAuth token endpoint on 127.0.0.1, checking what the
// real services check and answering with their real error bodies.
//
//   node fcm_standin.js PORT SERVICE_ACCOUNT_JSON LOG     prints "listening on PORT" when ready
//
// POST /token: the JWT-bearer grant (RFC 7523) with our service account's RS256 assertion:
//   signature (the account's public key), iss = client_email, aud = this endpoint, the FCM
//   scope, exp - iat <= 1 h and not expired; else 400 invalid_grant. Issues a fresh token.
// POST /v1/projects/PROJECT/messages:send: a token this stand-in issued (else 401
//   UNAUTHENTICATED), the account's project, a message with a token and at most 4096 bytes of
//   payload. Device tokens choose the answer: unregistered* 404 UNREGISTERED, mismatch* 403
//   SENDER_ID_MISMATCH, quota* 429 QUOTA_EXCEEDED (Retry-After: 7), unavailable* 503,
//   internal* 500, invalid* 400 INVALID_ARGUMENT; any other token is accepted.
// POST /revoke: forgets every issued access token (the next send gets 401).
// Every request is appended to LOG as one JSON line.
'use strict';
const crypto = require('crypto');
const fs = require('fs');
const http = require('http');

const [port, accountFile, logFile] = [Number(process.argv[2]), process.argv[3], process.argv[4]];
const account = JSON.parse(fs.readFileSync(accountFile, 'utf8'));
const publicKey = crypto.createPublicKey(account.private_key);
const tokenUri = `http://127.0.0.1:${port}/token`;  // what Google checks: its own endpoint
const tokens = new Set();
const log = (entry) => fs.appendFileSync(logFile, JSON.stringify(entry) + '\n');

function send(res, status, body, headers = {}) {
  res.writeHead(status, {'Content-Type': 'application/json; charset=UTF-8', ...headers});
  res.end(JSON.stringify(body));
}

function fcmError(res, status, state, message, errorCode, headers) {
  const error = {code: status, message, status: state};
  if (errorCode) {
    error.details = [{'@type': 'type.googleapis.com/google.firebase.fcm.v1.FcmError', errorCode}];
  }
  send(res, status, {error}, headers);
}

function assertionProblem(jwt) {
  const parts = (jwt || '').split('.');
  if (parts.length !== 3) return 'not a JWT';
  const header = JSON.parse(Buffer.from(parts[0], 'base64url'));
  const claims = JSON.parse(Buffer.from(parts[1], 'base64url'));
  if (header.alg !== 'RS256') return 'alg must be RS256';
  if (header.kid !== undefined && header.kid !== account.private_key_id) return 'kid is not the key id';
  const ok = crypto.verify('sha256', Buffer.from(parts[0] + '.' + parts[1]), publicKey, Buffer.from(parts[2], 'base64url'));
  if (!ok) return 'Invalid JWT Signature.';
  if (claims.iss !== account.client_email) return 'Invalid issuer';
  if (claims.aud !== tokenUri) return 'Invalid JWT: aud ' + claims.aud;
  if (!String(claims.scope).split(' ').includes('https://www.googleapis.com/auth/firebase.messaging')) return 'Invalid scope';
  if (!(claims.exp > claims.iat) || claims.exp - claims.iat > 3600) return 'Invalid JWT: exp - iat must be at most one hour';
  if (claims.exp < Date.now() / 1000) return 'Invalid JWT: Token must be a short-lived token and in a reasonable timeframe';
  return null;
}

http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    const entry = {method: req.method, path: req.url, headers: req.headers, body};
    log(entry);
    if (req.method === 'POST' && req.url === '/revoke') {
      tokens.clear();
      return send(res, 200, {});
    }
    if (req.method === 'POST' && req.url === '/token') {
      const form = new URLSearchParams(body);
      if (form.get('grant_type') !== 'urn:ietf:params:oauth:grant-type:jwt-bearer') {
        return send(res, 400, {error: 'unsupported_grant_type', error_description: 'Invalid grant_type'});
      }
      const problem = assertionProblem(form.get('assertion'));
      if (problem) return send(res, 400, {error: 'invalid_grant', error_description: problem});
      const token = 'ya29.' + crypto.randomBytes(24).toString('base64url');
      tokens.add(token);
      return send(res, 200, {access_token: token, expires_in: 3599, token_type: 'Bearer'});
    }
    const m = /^\/v1\/projects\/([^/]+)\/messages:send$/.exec(req.url);
    if (req.method !== 'POST' || !m) return send(res, 404, {error: {code: 404, message: 'Not Found', status: 'NOT_FOUND'}});
    const auth = /^Bearer (.+)$/.exec(req.headers.authorization || '');
    if (!auth || !tokens.has(auth[1])) {
      return fcmError(res, 401, 'UNAUTHENTICATED', 'Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.');
    }
    if (m[1] !== account.project_id) {
      return fcmError(res, 403, 'PERMISSION_DENIED', `Permission 'cloudmessaging.messages.create' denied on resource '//cloudresourcemanager.googleapis.com/projects/${m[1]}'`);
    }
    let message;
    try {
      message = JSON.parse(body).message;
    } catch (e) {
      return fcmError(res, 400, 'INVALID_ARGUMENT', 'Invalid JSON payload received. ' + e.message);
    }
    if (!message || typeof message.token !== 'string') {
      return fcmError(res, 400, 'INVALID_ARGUMENT', 'Request contains an invalid argument.', 'INVALID_ARGUMENT');
    }
    const payload = JSON.stringify({notification: message.notification, data: message.data});
    if (Buffer.byteLength(payload) > 4096) {
      return fcmError(res, 400, 'INVALID_ARGUMENT', 'Message is too big', 'INVALID_ARGUMENT');
    }
    const t = message.token;
    if (t.startsWith('unregistered')) return fcmError(res, 404, 'NOT_FOUND', 'Requested entity was not found.', 'UNREGISTERED');
    if (t.startsWith('mismatch')) return fcmError(res, 403, 'PERMISSION_DENIED', 'SenderId mismatch', 'SENDER_ID_MISMATCH');
    if (t.startsWith('quota')) {
      return fcmError(res, 429, 'RESOURCE_EXHAUSTED', 'Quota exceeded for quota metric \'Send requests\'.', 'QUOTA_EXCEEDED', {'Retry-After': '7'});
    }
    if (t.startsWith('unavailable')) return fcmError(res, 503, 'UNAVAILABLE', 'The service is currently unavailable.', 'UNAVAILABLE');
    if (t.startsWith('internal')) return fcmError(res, 500, 'INTERNAL', 'Internal error encountered.', 'INTERNAL');
    if (t.startsWith('invalid')) {
      return fcmError(res, 400, 'INVALID_ARGUMENT', 'The registration token is not a valid FCM registration token', 'INVALID_ARGUMENT');
    }
    send(res, 200, {name: `projects/${account.project_id}/messages/0:${Date.now()}%${crypto.randomBytes(4).toString('hex')}`});
  });
}).listen(port, '127.0.0.1', () => console.log(`listening on ${port}`));
