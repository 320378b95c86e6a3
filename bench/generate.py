#!/usr/bin/env python3
"""Generate realistic Segment-style track logs for one received day, deterministically.

    python bench/generate.py --events 250000 --out bench/work/logs-250k [--day 2025-02-01]

writes `<out>/<day>/*.ndjson[.gz]` plus `<out>/generated.json` (what was written: per-file line,
event and byte counts; the logs root is not a day folder, so `etl run` never reads it).

Deterministic: every choice comes from `random.Random` seeded from `--seed` (and the file's
index), never the clock; gzip members have mtime 0 and no file name. The same arguments give
byte-identical files, whatever `--jobs` is.

What the logs hold (see /work/shared/CONTRACT.md sections 1-2):
- 13 event names with realistic weights: "Product Viewed", "Page Scrolled", "Product Added",
  "Products Searched", "Video Played", "Checkout Started", "Order Completed" (revenue in
  USD/EUR/GBP/JPY, sometimes lower-case, missing or a numeric string), "Signed up for a trial"
  (Drip goal, `value` in cents), "Newsletter Subscribed", "Cart Viewed", "Product Removed",
  "Coupon Applied", "Form Submitted";
- nested `context` (web: page, campaign, library, ip, userAgent, locale, timezone; mobile:
  app, device, os, network, screen; server: library, ip) and nested `properties` (objects,
  arrays of objects such as `products`, arrays of strings such as `tags`);
- `properties.quantity` is an int, and from the 1000th event of a file on about 2% of the time
  a string ("2"): a type conflict that goes to discards;
- about 1% bad lines (truncated JSON, a message without `event`, JSON that is not an object),
  about 0.5% exact re-sends of an earlier line (a duplicate `messageId`), and batch envelopes
  `{"batch": [...], "sentAt": ..., "context": {...}}` in the mobile and server files;
- ISO-8601 timestamps: `receivedAt` rises through the day, `sentAt` and `originalTimestamp`
  a little earlier, about 0.5% of events happened 1-3 days before they were received.

`--events N` counts messages: a batch envelope of k messages counts k, a bad line counts 1.
Speed: a few hundred property and context templates are built once; each event only gets
fresh ids, timestamps and a few numbers, then orjson serializes it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import hashlib
import json
import os
import random
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import orjson

GENERATOR_VERSION = 1
DEFAULT_SEED = 20250201
DEFAULT_DAY = "2025-02-01"
MS_PER_DAY = 86_400_000
LATE_DAYS = 3  # late events happened up to this many days before they were received

BAD_LINE_RATE = 0.01
DUPLICATE_RATE = 0.005
BATCH_LINE_RATE = 0.02  # share of mobile/server lines that are an envelope (2..20 messages)
LATE_RATE = 0.005
STRING_QUANTITY_RATE = 0.02
STRING_QUANTITY_AFTER = 1000

EVENT_WEIGHTS = [
    ("Product Viewed", 22),
    ("Page Scrolled", 18),
    ("Product Added", 10),
    ("Products Searched", 9),
    ("Video Played", 8),
    ("Cart Viewed", 6),
    ("Checkout Started", 5),
    ("Product Removed", 3),
    ("Order Completed", 4),
    ("Coupon Applied", 2),
    ("Form Submitted", 4),
    ("Newsletter Subscribed", 4),
    ("Signed up for a trial", 5),
]
TEMPLATES_PER_EVENT = 40
CONTEXTS_PER_PLATFORM = 60

# --------------------------------------------------------------------------------------------
# The world: catalogue, pages, campaigns, clients
# --------------------------------------------------------------------------------------------

CATEGORIES = ["Apparel", "Footwear", "Outdoor", "Electronics", "Home & Kitchen", "Books", "Toys", "Beauty"]
BRANDS = ["Northwind", "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne"]
ADJECTIVES = ["Classic", "Trail", "Urban", "Pro", "Ultra", "Compact", "Deluxe", "Everyday", "Vintage", "Eco"]
NOUNS = ["Jacket", "Running Shoe", "Backpack", "Headphones", "Kettle", "Novel", "Puzzle", "Serum", "Tent", "Lamp"]
CURRENCIES = [("USD", 55), ("EUR", 20), ("GBP", 15), ("JPY", 10)]
LOCALES = ["en-US", "en-GB", "de-DE", "fr-FR", "ja-JP", "es-ES", "nl-NL", "it-IT"]
TIMEZONES = ["America/New_York", "America/Los_Angeles", "Europe/London", "Europe/Berlin", "Europe/Paris", "Asia/Tokyo"]
USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
]
PAGES = [
    ("/", "Home | Northwind Outfitters"),
    ("/apparel", "Apparel | Northwind Outfitters"),
    ("/footwear/trail", "Trail Shoes | Northwind Outfitters"),
    ("/outdoor/tents", "Tents | Northwind Outfitters"),
    ("/search", "Search results | Northwind Outfitters"),
    ("/cart", "Your cart | Northwind Outfitters"),
    ("/checkout", "Checkout | Northwind Outfitters"),
    ("/blog/how-to-choose-a-backpack", "How to choose a backpack | Northwind Journal"),
    ("/pricing", "Pricing | Northwind Pro"),
    ("/signup", "Start your free trial | Northwind Pro"),
]
REFERRERS = ["https://www.google.com/", "https://www.bing.com/", "https://t.co/", "https://www.facebook.com/", "", "https://news.ycombinator.com/"]
CAMPAIGNS = [
    {"name": "winter_sale_2025", "source": "google", "medium": "cpc", "term": "trail shoes", "content": "ad_variant_b"},
    {"name": "newsletter_0130", "source": "newsletter", "medium": "email", "content": "hero_banner"},
    {"name": "spring_preview", "source": "facebook", "medium": "social"},
    {"name": "brand_search", "source": "bing", "medium": "cpc", "term": "northwind"},
    {"name": "retargeting_q1", "source": "criteo", "medium": "display", "content": "carousel"},
]
MOBILE_CLIENTS = [
    ({"name": "analytics-ios", "version": "4.1.8"}, {"name": "iOS", "version": "18.1.1"}, {"manufacturer": "Apple", "model": "iPhone15,3", "type": "ios"}, {"width": 393, "height": 852}),
    ({"name": "analytics-ios", "version": "4.1.7"}, {"name": "iOS", "version": "17.6"}, {"manufacturer": "Apple", "model": "iPhone14,5", "type": "ios"}, {"width": 390, "height": 844}),
    ({"name": "analytics-kotlin", "version": "1.16.3"}, {"name": "Android", "version": "14"}, {"manufacturer": "Google", "model": "Pixel 8", "type": "android"}, {"width": 412, "height": 915}),
    ({"name": "analytics-kotlin", "version": "1.16.1"}, {"name": "Android", "version": "13"}, {"manufacturer": "samsung", "model": "SM-S911B", "type": "android"}, {"width": 360, "height": 780}),
]
SERVER_LIBRARIES = [{"name": "analytics-python", "version": "2.3.3"}, {"name": "analytics-node", "version": "2.2.1"}]
CARRIERS = ["T-Mobile", "Vodafone", "Verizon", "O2", "Orange"]
PLANS = [("Starter", 0), ("Pro", 2900), ("Team", 4900), ("Enterprise", 19900)]
TAGS = ["new", "sale", "bestseller", "eco", "limited", "gift", "clearance", "premium"]
SEARCHES = ["trail shoes", "rain jacket", "usb-c headphones", "tent 2 person", "gift for dad", "kettle", "wool socks"]
NON_OBJECTS = [b"[1,2,3]", b'"track"', b"42", b"null", b'[{"event":"Order Completed"}]', b"true"]
FILE_KINDS = ["web", "web", "mobile", "server"]  # cycled over the files of the day


def pick_weighted(rng: random.Random, items: list[tuple]) -> str:
    return rng.choices([i[0] for i in items], weights=[i[1] for i in items])[0]


def hex_id(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(4 * digits):0{digits}x}"


def uuid_like(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"


class World:
    """Everything that does not change per event: products, users, property and context templates."""

    def __init__(self, seed: int, events: int):
        rng = random.Random(f"world:{seed}")
        self.products = [self._product(rng, i) for i in range(300)]
        n_users = max(1000, events // 25)
        self.anonymous_ids = [uuid_like(rng) for _ in range(n_users)]
        self.user_ids: list[str | int | None] = []
        for _ in range(n_users):
            roll = rng.random()
            self.user_ids.append(None if roll < 0.62 else rng.randrange(10**5, 10**9) if roll < 0.63 else "usr_" + hex_id(rng, 10))
        self.event_names = [e for e, _ in EVENT_WEIGHTS]
        self.event_weights = [w for _, w in EVENT_WEIGHTS]
        self.cum_weights = []
        total = 0
        for w in self.event_weights:
            total += w
            self.cum_weights.append(total)
        self.properties = {
            name: [self._properties(rng, name) for _ in range(TEMPLATES_PER_EVENT)] for name in self.event_names
        }
        self.contexts = {
            "web": [self._web_context(rng) for _ in range(CONTEXTS_PER_PLATFORM)],
            "mobile": [self._mobile_context(rng) for _ in range(CONTEXTS_PER_PLATFORM)],
            "server": [self._server_context(rng) for _ in range(CONTEXTS_PER_PLATFORM // 4)],
        }

    # -- catalogue ---------------------------------------------------------------------------

    @staticmethod
    def _product(rng: random.Random, i: int) -> dict:
        category = rng.choice(CATEGORIES)
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
        slug = name.lower().replace(" ", "-")
        return {
            "product_id": f"prod_{i:05d}",
            "sku": f"{category[:3].upper()}-{rng.randrange(10000, 99999)}",
            "category": category,
            "name": name,
            "brand": rng.choice(BRANDS),
            "price": round(rng.uniform(4, 400), 2),
            "url": f"/p/{slug}-{i}",
        }

    def _line_item(self, rng: random.Random, position: int) -> dict:
        p = self.products[rng.randrange(len(self.products))]
        return {
            "product_id": p["product_id"], "name": p["name"], "price": p["price"],
            "quantity": rng.randint(1, 3), "position": position,
        }

    # -- properties --------------------------------------------------------------------------

    def _properties(self, rng: random.Random, event: str) -> dict:
        p = self.products[rng.randrange(len(self.products))]
        if event == "Product Viewed":
            return {**p, "currency": "USD", "position": rng.randint(1, 24), "tags": rng.sample(TAGS, rng.randint(0, 3))}
        if event == "Product Added" or event == "Product Removed":
            return {**p, "cart_id": "cart_" + hex_id(rng, 12), "quantity": 1, "coupon": rng.choice(["", "WINTER10", "FREESHIP"]),
                    "position": rng.randint(1, 24)}
        if event == "Page Scrolled":
            path, title = rng.choice(PAGES)
            return {"depth": rng.choice([25, 50, 75, 100]), "pagePath": path, "pageTitle": title,
                    "viewport": {"width": rng.choice([1280, 1440, 1920, 390]), "height": rng.choice([720, 900, 1080, 844])}}
        if event == "Products Searched":
            return {"query": rng.choice(SEARCHES), "resultsCount": rng.randint(0, 240),
                    "filters": {"category": rng.choice(CATEGORIES), "price": {"min": 0, "max": rng.choice([50, 100, 250])}, "inStock": rng.random() < 0.7},
                    "sort": rng.choice(["relevance", "price_asc", "newest"])}
        if event == "Video Played":
            return {"session_id": hex_id(rng, 16), "content_asset_id": f"vid_{rng.randrange(1000):04d}", "position": 0,
                    "total_length": rng.randint(30, 900), "bitrate": rng.choice([800, 1800, 4500]), "framerate": rng.choice([24, 30, 60]),
                    "video_player": rng.choice(["youtube", "vimeo", "html5"]), "sound": rng.randint(0, 100),
                    "full_screen": rng.random() < 0.2, "ad_enabled": rng.random() < 0.5, "quality": rng.choice(["hd720", "hd1080", "auto"]),
                    "livestream": False}
        if event == "Cart Viewed":
            items = [self._line_item(rng, i + 1) for i in range(rng.randint(1, 3))]
            return {"cart_id": "cart_" + hex_id(rng, 12), "products": items}
        if event == "Checkout Started":
            items = [self._line_item(rng, i + 1) for i in range(rng.randint(1, 3))]
            subtotal = round(sum(i["price"] * i["quantity"] for i in items), 2)
            return {"order_id": "ord_" + hex_id(rng, 10), "affiliation": "Online Store", "subtotal": subtotal,
                    "shipping": rng.choice([0, 4.99, 9.99]), "tax": round(subtotal * 0.08, 2), "discount": 0,
                    "coupon": rng.choice(["", "WINTER10"]), "currency": "USD", "products": items}
        if event == "Order Completed":
            items = [self._line_item(rng, i + 1) for i in range(rng.randint(1, 3))]
            subtotal = round(sum(i["price"] * i["quantity"] for i in items), 2)
            return {"checkout_id": "chk_" + hex_id(rng, 10), "order_id": "ord_" + hex_id(rng, 10), "affiliation": "Online Store",
                    "total": subtotal, "subtotal": subtotal, "revenue": subtotal, "shipping": rng.choice([0, 4.99, 9.99]),
                    "tax": round(subtotal * 0.08, 2), "discount": rng.choice([0, 0, 5]), "coupon": rng.choice(["", "WINTER10"]),
                    "currency": "USD", "products": items}
        if event == "Coupon Applied":
            return {"order_id": "ord_" + hex_id(rng, 10), "cart_id": "cart_" + hex_id(rng, 12), "coupon_id": "cpn_" + hex_id(rng, 6),
                    "coupon_name": rng.choice(["WINTER10", "FREESHIP", "WELCOME15"]), "discount": rng.choice([5, 10, 15])}
        if event == "Form Submitted":
            return {"formId": rng.choice(["contact", "demo-request", "feedback"]), "formType": "lead",
                    "fields": {"company_size": rng.choice(["1-10", "11-50", "51-200", "201+"]), "country": rng.choice(["US", "DE", "GB", "JP"])},
                    "tags": rng.sample(TAGS, 2)}
        if event == "Newsletter Subscribed":
            return {"list_id": f"list_{rng.randrange(10)}", "list_name": rng.choice(["Weekly deals", "Product news", "Trail journal"]),
                    "source": rng.choice(["footer", "popup", "checkout"]), "topics": rng.sample(["deals", "outdoor", "tech", "home"], 2),
                    "double_opt_in": rng.random() < 0.5}
        if event == "Signed up for a trial":
            plan, cents = rng.choice(PLANS)
            return {"plan": plan, "value": cents, "trialDays": rng.choice([14, 30]), "billing": {"interval": rng.choice(["month", "year"])},
                    "source": rng.choice(["pricing_page", "signup_form", "sales"])}
        raise ValueError(event)

    # -- contexts ----------------------------------------------------------------------------

    @staticmethod
    def _web_context(rng: random.Random) -> dict:
        path, title = rng.choice(PAGES)
        campaign = rng.choice(CAMPAIGNS) if rng.random() < 0.35 else None
        search = f"?utm_source={campaign['source']}&utm_medium={campaign['medium']}&utm_campaign={campaign['name']}" if campaign else ""
        ctx = {
            "library": {"name": "analytics.js", "version": rng.choice(["next-1.72.0", "next-1.70.2"])},
            "page": {"path": path, "referrer": rng.choice(REFERRERS), "title": title,
                     "url": f"https://shop.example.com{path}{search}"},
            "userAgent": rng.choice(USER_AGENTS),
            "locale": rng.choice(LOCALES),
            "ip": f"203.0.113.{rng.randrange(1, 255)}",
        }
        if campaign:
            ctx["campaign"] = dict(campaign)
        return ctx

    @staticmethod
    def _mobile_context(rng: random.Random) -> dict:
        lib, os_info, device, screen = rng.choice(MOBILE_CLIENTS)
        return {
            "library": lib,
            "app": {"name": "Northwind", "version": "3.8.0"},
            "device": {**device, "id": uuid_like(rng)},
            "os": os_info,
            "screen": screen,
            "network": {"wifi": rng.random() < 0.6, "carrier": rng.choice(CARRIERS)},
            "locale": rng.choice(LOCALES),
            "timezone": rng.choice(TIMEZONES),
            "ip": f"198.51.100.{rng.randrange(1, 255)}",
        }

    @staticmethod
    def _server_context(rng: random.Random) -> dict:
        return {"library": rng.choice(SERVER_LIBRARIES), "ip": f"192.0.2.{rng.randrange(1, 255)}"}


# --------------------------------------------------------------------------------------------
# One file
# --------------------------------------------------------------------------------------------


class Clock:
    """ISO-8601 strings for millisecond offsets from the start of (day - LATE_DAYS), cached per second."""

    def __init__(self, day: str):
        start = dt.date.fromisoformat(day) - dt.timedelta(days=LATE_DAYS)
        self.dates = [(start + dt.timedelta(days=i)).isoformat() for i in range(LATE_DAYS + 1)]
        self.day0 = LATE_DAYS * MS_PER_DAY  # offset of the received day's midnight
        self.cache: dict[int, str] = {}

    def iso(self, ms: int) -> str:
        if ms < 0:
            ms = 0
        second, milli = divmod(ms, 1000)
        prefix = self.cache.get(second)
        if prefix is None:
            d, s = divmod(second, 86400)
            prefix = f"{self.dates[d]}T{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}."
            self.cache[second] = prefix
        return f"{prefix}{milli:03d}Z"


def currency_variant(rng: random.Random, props: dict) -> dict:
    """Order Completed: another currency (and amount) in place of the template's."""
    props = dict(props)
    roll = rng.random()
    currency = "USD" if roll < 0.55 else "EUR" if roll < 0.75 else "GBP" if roll < 0.90 else "JPY"
    amount = props["revenue"] * rng.uniform(0.8, 1.25)
    if currency == "JPY":
        amount = float(round(amount * 150))
    else:
        amount = round(amount, 2)
    props["revenue"] = props["total"] = amount
    roll = rng.random()
    if roll < 0.03:
        props["currency"] = currency.lower()
    elif roll < 0.05:
        del props["currency"]  # missing: USD by the contract
    else:
        props["currency"] = currency
    if rng.random() < 0.01:
        props["revenue"] = f"{amount:.2f}"  # a numeric string, accepted and converted
    return props


_WORLDS: dict[tuple[int, int], World] = {}


def _world(seed: int, events: int) -> World:
    """One World per process and (seed, size): building it is the same work for every file."""
    key = (seed, events)
    if key not in _WORLDS:
        _WORLDS.clear()
        _WORLDS[key] = World(seed, events)
    return _WORLDS[key]


def generate_file(args: tuple) -> dict:
    """Write one log file; returns its counts. Runs in a worker process when --jobs > 1."""
    seed, events_total, day, index, kind, n_events, path, compresslevel = args
    world = _world(seed, events_total)
    rng = random.Random(f"file:{seed}:{index}")
    clock = Clock(day)
    dumps = orjson.dumps
    rand = rng.random
    randrange = rng.randrange
    getrandbits = rng.getrandbits
    names, cum = world.event_names, world.cum_weights
    total_weight = cum[-1]
    props_by_event = world.properties
    contexts = world.contexts[kind]
    n_ctx = len(contexts)
    anon_ids, user_ids = world.anonymous_ids, world.user_ids
    n_users = len(anon_ids)
    batched = kind != "web"
    recent: list[bytes] = []
    counts = {"lines": 0, "events": 0, "bad_lines": 0, "duplicate_lines": 0, "envelopes": 0, "batched_messages": 0,
              "string_quantities": 0, "late_events": 0, "raw_bytes": 0}
    bisect_names = __import__("bisect").bisect_right

    def message(i: int, received_ms: int, in_batch: bool) -> dict:
        name = names[bisect_names(cum, rand() * total_weight)]
        templates = props_by_event[name]
        props = templates[randrange(TEMPLATES_PER_EVENT)]
        if name == "Order Completed":
            props = currency_variant(rng, props)
        elif name == "Product Added":
            props = dict(props)
            if i > STRING_QUANTITY_AFTER and rand() < STRING_QUANTITY_RATE:
                props["quantity"] = str(randrange(1, 5))
                counts["string_quantities"] += 1
            else:
                props["quantity"] = randrange(1, 5)
        elif name == "Signed up for a trial" and rand() < 0.05:
            props = dict(props)
            props["value"] = str(props["value"])  # integer string, accepted and converted
        user = int(n_users * rand() ** 2)  # a few users are much more active than most
        h = f"{getrandbits(128):032x}"
        msg = {"type": "track", "event": name, "messageId": f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}",
               "anonymousId": anon_ids[user]}
        uid = user_ids[user]
        if uid is not None and rand() < 0.8:
            msg["userId"] = uid
        sent_ms = received_ms - 40 - randrange(2000)
        if rand() < LATE_RATE:
            original_ms = sent_ms - randrange(MS_PER_DAY, LATE_DAYS * MS_PER_DAY)
            counts["late_events"] += 1
        else:
            original_ms = sent_ms - randrange(60_000)
        original = clock.iso(original_ms)
        if rand() < 0.9:
            msg["timestamp"] = original
        msg["originalTimestamp"] = original
        if not in_batch:
            msg["sentAt"] = clock.iso(sent_ms)
        msg["receivedAt"] = clock.iso(received_ms)
        msg["properties"] = props
        ctx = contexts[randrange(n_ctx)]
        if in_batch:
            ctx = {k: v for k, v in ctx.items() if k != "library"}  # the envelope carries it
        msg["context"] = ctx
        return msg

    out_lines: list[bytes] = []
    raw_bytes = 0
    handle = path.open("wb")
    sink = gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=compresslevel) if path.name.endswith(".gz") else handle

    def flush() -> None:
        nonlocal raw_bytes
        if out_lines:
            blob = b"\n".join(out_lines) + b"\n"
            raw_bytes += len(blob)
            sink.write(blob)
            out_lines.clear()

    done = 0
    step = MS_PER_DAY / max(n_events, 1)
    base = clock.day0
    while done < n_events:
        received_ms = base + int(done * step) + randrange(1000)
        received_ms = min(received_ms, base + MS_PER_DAY - 1)
        roll = rand()
        if roll < BAD_LINE_RATE:
            kind_roll = rand()
            if kind_roll < 0.4:
                line = dumps(message(done, received_ms, False))
                line = line[: randrange(10, len(line) - 1)]  # truncated JSON
            elif kind_roll < 0.7:
                msg = message(done, received_ms, False)
                del msg["event"]
                line = dumps(msg)
            else:
                line = NON_OBJECTS[randrange(len(NON_OBJECTS))]
            counts["bad_lines"] += 1
            done += 1
        elif roll < BAD_LINE_RATE + DUPLICATE_RATE and recent:
            line = recent[randrange(len(recent))]  # a client retry: the same message again
            counts["duplicate_lines"] += 1
            done += 1
        elif batched and roll < BAD_LINE_RATE + DUPLICATE_RATE + BATCH_LINE_RATE and n_events - done >= 2:
            k = min(randrange(2, 21), n_events - done)
            msgs = [message(done + j, received_ms, True) for j in range(k)]
            envelope = {"batch": msgs, "sentAt": clock.iso(received_ms - 40 - randrange(2000)),
                        "context": {"library": contexts[randrange(n_ctx)]["library"]}}
            line = dumps(envelope)
            counts["envelopes"] += 1
            counts["batched_messages"] += k
            done += k
        else:
            line = dumps(message(done, received_ms, False))
            if len(recent) < 2000:
                recent.append(line)
            else:
                recent[randrange(2000)] = line
            done += 1
        out_lines.append(line)
        counts["lines"] += 1
        if len(out_lines) >= 20000:
            flush()
    flush()
    if sink is not handle:
        sink.close()
    handle.close()
    counts["events"] = done
    counts["raw_bytes"] = raw_bytes
    counts["file_bytes"] = path.stat().st_size
    counts["file"] = path.name
    counts["kind"] = kind
    return counts


# --------------------------------------------------------------------------------------------
# The day
# --------------------------------------------------------------------------------------------


def default_files(events: int) -> int:
    return max(4, min(16, round(events / 125_000)))


def plan_files(events: int, files: int) -> list[tuple[str, str, int]]:
    """(kind, file name, events) for each file; web files are gzipped, the others plain."""
    plan = []
    per, extra = divmod(events, files)
    seen: dict[str, int] = {}
    for i in range(files):
        kind = FILE_KINDS[i % len(FILE_KINDS)]
        n = seen.get(kind, 0)
        seen[kind] = n + 1
        name = f"{kind}-{n:03d}.ndjson.gz" if kind == "web" else f"{kind}-{n:03d}.ndjson"
        plan.append((kind, name, per + (1 if i < extra else 0)))
    return plan


def generator_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def generate(events: int, out: Path, day: str = DEFAULT_DAY, seed: int = DEFAULT_SEED, files: int | None = None,
             jobs: int | None = None, compresslevel: int = 6) -> dict:
    """Write the day's files under out/day (replacing them) and out/generated.json; return that summary."""
    dt.date.fromisoformat(day)
    files = files or default_files(events)
    jobs = jobs or min(2, os.cpu_count() or 1)
    folder = out / day
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    (out / "generated.json").unlink(missing_ok=True)
    plan = plan_files(events, files)
    tasks = [(seed, events, day, i, kind, n, folder / name, compresslevel) for i, (kind, name, n) in enumerate(plan)]
    started = time.perf_counter()
    if jobs > 1 and len(tasks) > 1:
        with Pool(min(jobs, len(tasks))) as pool:
            per_file = pool.map(generate_file, tasks, chunksize=1)
    else:
        per_file = [generate_file(t) for t in tasks]
    seconds = time.perf_counter() - started
    totals = {k: sum(f[k] for f in per_file) for k in per_file[0] if isinstance(per_file[0][k], int)}
    summary = {
        "generator_version": GENERATOR_VERSION, "generator_sha": generator_digest(),
        "events": events, "seed": seed, "day": day, "files": files, "compresslevel": compresslevel,
        "totals": totals, "per_file": per_file, "seconds": round(seconds, 2),
    }
    (out / "generated.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, required=True, help="messages to write (a batch of k counts k)")
    parser.add_argument("--out", type=Path, required=True, help="logs root; the files go to OUT/DAY/")
    parser.add_argument("--day", default=DEFAULT_DAY, help="received day, YYYY-MM-DD (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="default %(default)s")
    parser.add_argument("--files", type=int, default=None, help="number of files (default: 4..16 by size)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: min(2, cores)); output does not depend on it")
    parser.add_argument("--compresslevel", type=int, default=6, help="gzip level of the web files (default %(default)s)")
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    s = generate(args.events, args.out, args.day, args.seed, args.files, args.jobs, args.compresslevel)
    t = s["totals"]
    print(
        f"wrote {s['events']:,} events in {t['lines']:,} lines, {s['files']} files under {args.out / args.day}: "
        f"{t['raw_bytes']:,} bytes of NDJSON ({t['raw_bytes'] / 1e6:.1f} MB uncompressed, "
        f"{t['raw_bytes'] / s['events']:.0f} B/event), {t['file_bytes']:,} bytes on disk, in {s['seconds']:.1f} s"
    )
    print(
        f"  bad lines {t['bad_lines']:,}, duplicate re-sends {t['duplicate_lines']:,}, envelopes {t['envelopes']:,} "
        f"({t['batched_messages']:,} messages), string quantities {t['string_quantities']:,}, late events {t['late_events']:,}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
