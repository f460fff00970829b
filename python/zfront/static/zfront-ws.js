/* zfront-ws.js: the browser client of zfront's WebSocket notifications
 * (docs/protocols/websocket.md). No dependencies; works as a classic
 * script (window.ZfrontSocket) and as a CommonJS module.
 *
 *   const zs = new ZfrontSocket("/ws", {
 *     onEvent: (topic, data, msg) => ...,   // every event
 *     onGap: (topic, msg) => ...,           // missed events are gone: reload
 *     onState: (state) => ...,              // "connecting" | "open" | "closed"
 *   });
 *   zs.subscribe("content/docs");
 *   zs.publish("chat/room", {text: "hi"});  // when the server granted it
 *
 * It reconnects with exponential backoff (with jitter) after any close, and
 * resubscribes each topic with the position of the last event it saw, so
 * the server replays what was missed or sends a gap. */
(function (root) {
  "use strict";

  function absoluteUrl(url) {
    if (/^wss?:\/\//.test(url)) return url;
    var loc = root.location;
    return (loc.protocol === "https:" ? "wss://" : "ws://") + loc.host + url;
  }

  function ZfrontSocket(url, opts) {
    this.url = absoluteUrl(url || "/ws");
    this.opts = opts || {};
    this.topics = {}; // topic -> last position seen ("EPOCH-ID") or null
    this.minDelay = this.opts.minDelay || 500;
    this.maxDelay = this.opts.maxDelay || 30000;
    this.delay = this.minDelay;
    this.closed = false;
    this.ws = null;
    this._connect();
  }

  ZfrontSocket.prototype._state = function (state) {
    this.state = state;
    if (this.opts.onState) this.opts.onState(state);
  };

  ZfrontSocket.prototype._send = function (msg) {
    if (this.ws && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify(msg));
      return true;
    }
    return false;
  };

  ZfrontSocket.prototype._subscribeMsg = function (topic) {
    var msg = {type: "subscribe", topic: topic};
    if (this.topics[topic]) msg.since = this.topics[topic];
    return msg;
  };

  ZfrontSocket.prototype._connect = function () {
    var self = this;
    this._state("connecting");
    var ws = new root.WebSocket(this.url, ["zfront.v1"]);
    this.ws = ws;
    ws.onopen = function () {
      self.delay = self.minDelay;
      self._state("open");
      Object.keys(self.topics).forEach(function (t) {
        self._send(self._subscribeMsg(t));
      });
    };
    ws.onmessage = function (m) {
      var msg;
      try {
        msg = JSON.parse(m.data);
      } catch (e) {
        return;
      }
      if (msg.type === "event") {
        if (msg.topic in self.topics) self.topics[msg.topic] = msg.pos;
        if (self.opts.onEvent) self.opts.onEvent(msg.topic, msg.data, msg);
      } else if (msg.type === "gap") {
        if (msg.last) self.topics[msg.topic] = msg.last;
        if (self.opts.onGap) self.opts.onGap(msg.topic, msg);
      } else if (msg.type === "error") {
        if (self.opts.onError) self.opts.onError(msg);
      }
    };
    ws.onclose = function () {
      self.ws = null;
      self._state("closed");
      if (self.closed) return;
      var wait = self.delay * (0.5 + Math.random() / 2);
      self.delay = Math.min(self.delay * 2, self.maxDelay);
      setTimeout(function () {
        if (!self.closed) self._connect();
      }, wait);
    };
  };

  ZfrontSocket.prototype.subscribe = function (topic, since) {
    if (!(topic in this.topics)) this.topics[topic] = since || null;
    this._send(this._subscribeMsg(topic));
  };

  ZfrontSocket.prototype.unsubscribe = function (topic) {
    delete this.topics[topic];
    this._send({type: "unsubscribe", topic: topic});
  };

  ZfrontSocket.prototype.publish = function (topic, data) {
    return this._send({type: "publish", topic: topic, data: data});
  };

  ZfrontSocket.prototype.close = function () {
    this.closed = true;
    if (this.ws) this.ws.close(1000);
  };

  root.ZfrontSocket = ZfrontSocket;
  if (typeof module !== "undefined" && module.exports) module.exports = ZfrontSocket;
})(typeof window !== "undefined" ? window : globalThis);
