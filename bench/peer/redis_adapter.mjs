// oidc-provider's storage in Redis, so that the peer's workers share what one of them issued
// (a code redeemed by the other worker, a refresh token rotated by either), as the service's
// workers share their database. Written for the bench from oidc-provider's adapter interface
// (its docs, "adapter"); not a production adapter: no clustering, no retries.
//
// A model's payload is one JSON string under `<prefix><model>:<id>`; its consumption a second
// key beside it; the ids issued from one grant a set under `<prefix>grant:<grantId>`, so that
// revoking the grant deletes them; uid and user code lookups one key each.
import { Redis } from 'ioredis';

export default function redisAdapter(url, prefix) {
  const client = new Redis(url, { keyPrefix: prefix, lazyConnect: false });

  return class RedisAdapter {
    constructor(model) {
      this.model = model;
    }

    key(id) {
      return `${this.model}:${id}`;
    }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      const ttl = expiresIn ? ['EX', expiresIn] : [];
      const batch = client.multi().set(key, JSON.stringify(payload), ...ttl);
      if (payload.grantId) {
        const grant = `grant:${payload.grantId}`;
        batch.sadd(grant, key);
        if (expiresIn) batch.expire(grant, expiresIn, 'GT').expire(grant, expiresIn, 'NX');
      }
      if (payload.uid) batch.set(`uid:${payload.uid}`, id, ...ttl);
      if (payload.userCode) batch.set(`userCode:${payload.userCode}`, id, ...ttl);
      await batch.exec();
    }

    async find(id) {
      const key = this.key(id);
      const [[, data], [, consumed]] = await client.multi().get(key).get(`${key}:consumed`).exec();
      if (!data) return undefined;
      const payload = JSON.parse(data);
      if (consumed) payload.consumed = Number(consumed);
      return payload;
    }

    async findByUid(uid) {
      const id = await client.get(`uid:${uid}`);
      return id ? this.find(id) : undefined;
    }

    async findByUserCode(userCode) {
      const id = await client.get(`userCode:${userCode}`);
      return id ? this.find(id) : undefined;
    }

    async consume(id) {
      const key = this.key(id);
      const ttl = await client.ttl(key);
      const expiry = ttl > 0 ? ['EX', ttl] : [];
      await client.set(`${key}:consumed`, Math.floor(Date.now() / 1000), ...expiry);
    }

    async destroy(id) {
      const key = this.key(id);
      await client.del(key, `${key}:consumed`);
    }

    async revokeByGrantId(grantId) { // eslint-disable-line class-methods-use-this
      const grant = `grant:${grantId}`;
      // The members are stored with the prefix left out (ioredis adds it to keys, not values).
      const keys = await client.smembers(grant);
      await client.del(grant, ...keys, ...keys.map((k) => `${k}:consumed`));
    }
  };
}
