// Opaque session ids for the server-side stores: 24 random bytes (192 bits) from the
// system CSPRNG, base64url without padding = 32 characters. The id says nothing: it is a key
// into the store, guessable only by chance (2^-192 per try).

export const ID_BYTES = 24;
export const ID_CHARS = 32;

const B64URL = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") B64URL[c.charCodeAt(0)] = 1;

export function newId(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(ID_BYTES))).toString("base64url");
}

/** Could `value` be an id we issued? (32 base64url characters; checked before the store is asked.) */
export function isId(value: string | null | undefined): value is string {
  if (typeof value !== "string" || value.length !== ID_CHARS) return false;
  for (let i = 0; i < ID_CHARS; i++) {
    const c = value.charCodeAt(i);
    if (c >= 128 || B64URL[c] === 0) return false;
  }
  return true;
}
