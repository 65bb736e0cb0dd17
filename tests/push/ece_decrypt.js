// Decrypts Web Push messages with npm http_ece (an implementation we did not write).
//   node ece_decrypt.js keys             prints {"private","p256dh","auth"} of a fresh subscription
//   node ece_decrypt.js decrypt PRIVATE AUTH < body.b64u
//                                        prints the plaintext (exit 1 and the error if it fails)
'use strict';
const crypto = require('crypto');
const ece = require('http_ece');

const [cmd, priv, auth] = process.argv.slice(2);
if (cmd === 'keys') {
  const dh = crypto.createECDH('prime256v1');
  dh.generateKeys();
  console.log(JSON.stringify({
    private: dh.getPrivateKey().toString('base64url'),
    p256dh: dh.getPublicKey().toString('base64url'),
    auth: crypto.randomBytes(16).toString('base64url'),
  }));
} else if (cmd === 'decrypt') {
  const body = Buffer.from(require('fs').readFileSync(0, 'utf8').trim(), 'base64url');
  const dh = crypto.createECDH('prime256v1');
  dh.setPrivateKey(Buffer.from(priv, 'base64url'));
  try {
    const plain = ece.decrypt(body, {version: 'aes128gcm', privateKey: dh, authSecret: Buffer.from(auth, 'base64url')});
    process.stdout.write(plain);
  } catch (e) {
    console.error('http_ece: ' + e.message);
    process.exit(1);
  }
} else {
  console.error('usage: ece_decrypt.js keys | decrypt PRIVATE AUTH < body');
  process.exit(2);
}
