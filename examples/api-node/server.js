'use strict';
// The example app's JSON API: an in-memory list of items, served with express.
const express = require('express');

const SEED_ITEMS = [
  { id: 1, name: 'Build the base images' },
  { id: 2, name: 'Push them to the registry' },
];

function invalid(res, message) {
  return res.status(400).json({ error: { code: 'invalid_request', message } });
}

function createApp(items = SEED_ITEMS.map((item) => ({ ...item }))) {
  const app = express();
  app.use(express.json({ limit: '16kb' }));
  app.get('/healthz', (req, res) => res.json({ status: 'ok' }));
  app.get('/api/items', (req, res) => res.json(items));
  app.post('/api/items', (req, res) => {
    const name = typeof req.body?.name === 'string' ? req.body.name.trim() : '';
    if (!name) return invalid(res, 'Send a JSON body with a non-empty "name".');
    const item = { id: items.length + 1, name };
    items.push(item);
    return res.status(201).json(item);
  });
  return app;
}

if (require.main === module) {
  const port = Number(process.env.PORT || 3000);
  const server = createApp().listen(port, () => {
    console.log(`api: listening on :${port}`);
  });
  // As PID 1 in a container, node gets no default SIGTERM action; stop cleanly.
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

module.exports = { createApp };
