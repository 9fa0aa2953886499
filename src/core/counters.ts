// Counters the hot path increments and the admin side reads (HAProxy style: pulled, not
// pushed). Plain numbers in one object; nothing here formats or exports them.

export const counters = {
  connections: 0, // accepted client connections
  connectionsOpen: 0,
  requests: 0, // request heads parsed and routed
  responses: 0, // responses completed
  badRequests: 0, // 4xx answered by Latch itself (parse errors, limits)
  noServer: 0, // 503: nothing eligible
  upstreamConnects: 0,
  upstreamReuses: 0,
  upstreamConnectErrors: 0,
  upstreamTimeouts: 0,
  upstreamAborts: 0, // backend closed mid-response
  retries: 0, // requests run again on another server after a failed connection
  queued: 0, // requests that waited for a server under its maxconn
  queueTimeouts: 0, // 503: timeout.queue passed
  persistHits: 0, // requests routed by a valid persistence cookie
  persistInserts: 0, // Set-Cookie lines inserted
  persistRedispatch: 0, // persisted server unusable, chose another
  tunnels: 0, // WebSocket tunnels established
  tunnelsOpen: 0,
  tunnelsRefused: 0, // 503: tunnel limits
  tunnelTimeouts: 0,
};
