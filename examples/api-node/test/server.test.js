'use strict';
const assert = require('node:assert/strict');
const { test } = require('node:test');
const request = require('supertest');
const { createApp } = require('../server');

test('health answers ok', async () => {
  const res = await request(createApp()).get('/healthz').expect(200);
  assert.deepEqual(res.body, { status: 'ok' });
});

test('a posted item is listed after the seed items', async () => {
  const app = createApp([]);
  await request(app).post('/api/items').send({ name: ' tea ' }).expect(201);
  const res = await request(app).get('/api/items').expect(200);
  assert.deepEqual(res.body, [{ id: 1, name: 'tea' }]);
});

test('an item without a name is refused with a JSON error', async () => {
  const res = await request(createApp()).post('/api/items').send({}).expect(400);
  assert.equal(res.body.error.code, 'invalid_request');
});
