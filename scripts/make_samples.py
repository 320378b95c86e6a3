#!/usr/bin/env python3
"""(Re)create data/samples/: three received days of Segment-style track logs.

Deterministic: every variation comes from `random.Random(SEED)` and fixed dates, never the
clock, and gzip members are written with mtime 0 and no file name, so a rerun is
byte-identical. The folder is deleted and rebuilt from scratch each time.

What the samples exercise (see CONTRACT.md sections 1 and 2):
- 3 received-day folders, plain and gzipped `.ndjson` / `.jsonl` files, one ignored README;
- ~200 valid track events a day: 10 event names, identity stitching, integer userIds,
  clock-skewed events without `timestamp`, nested context/properties, revenue in six
  currencies (lower case, missing, numeric strings), Drip goals with and without `value`;
- batch envelopes whose messages inherit `sentAt` / `context`, with bad items inside;
- a late event, duplicates within a day and across days;
- a byte-order mark, CRLF line endings, blank lines;
- at least one line for every quarantine reason code, and a truncated gzip file.

Usage: python scripts/make_samples.py   (from anywhere; writes next to this script's repo)
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - the project's venv has orjson
    import json

    def dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


SEED = 20250115
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "samples"
DAYS = ("2025-01-13", "2025-01-14", "2025-01-15")
UTC = dt.timezone.utc
BOM = b"\xef\xbb\xbf"

# Which file of a day each kind of traffic lands in, and how each file is encoded.
FILES = {
    "2025-01-13": {"web": "web-1.ndjson.gz", "mobile": "mobile.ndjson", "server": "server.jsonl"},
    "2025-01-14": {"web": "web.ndjson.gz", "mobile": "mobile.jsonl", "server": "server.ndjson"},
    "2025-01-15": {"web": "collector.jsonl.gz", "mobile": "mobile.ndjson", "server": "collector.jsonl.gz"},
}
FILE_FORMAT = {  # (day, name): options for encode_file
    ("2025-01-13", "server.jsonl"): {"bom": True},
    ("2025-01-14", "mobile.jsonl"): {"crlf": True},
}
TRUNCATED = ("2025-01-15", "truncated.ndjson.gz")

rng = random.Random(SEED)


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def iso(t: dt.datetime) -> str:
    """ISO-8601 UTC with milliseconds, as Segment libraries write it."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def iso_offset(t: dt.datetime, hours: int) -> str:
    """The same instant written with a UTC offset (some clients send local time)."""
    local = t.astimezone(dt.timezone(dt.timedelta(hours=hours)))
    return local.isoformat(timespec="milliseconds")


def at(day: str, hour: int, minute: int, second: float = 0.0) -> dt.datetime:
    base = dt.datetime.fromisoformat(day).replace(tzinfo=UTC)
    return base + dt.timedelta(hours=hour, minutes=minute, seconds=second)


def ms(low: int, high: int) -> dt.timedelta:
    return dt.timedelta(milliseconds=rng.randint(low, high))


def uuid() -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) % 4]}{h[17:20]}-{h[20:32]}"


def hex_id(n: int) -> str:
    return f"{rng.getrandbits(4 * n):0{n}x}"


def doc_ip() -> str:
    """Addresses from the documentation ranges (RFC 5737) only."""
    return f"{rng.choice(['192.0.2', '198.51.100', '203.0.113'])}.{rng.randint(1, 254)}"


def weighted(options: list[tuple[Any, int]]) -> Any:
    values, weights = zip(*options)
    return rng.choices(values, weights=weights)[0]


# --------------------------------------------------------------------------------------------
# The world: users, products, campaigns, clients
# --------------------------------------------------------------------------------------------


@dataclass
class User:
    user_id: str | int | None
    anonymous_id: str
    locale: str
    country: str
    city: str


PLACES = [
    ("en-US", "US", "Austin"), ("en-US", "US", "Portland"), ("en-GB", "GB", "Manchester"),
    ("de-DE", "DE", "München"), ("fr-FR", "FR", "Lyon"), ("ja-JP", "JP", "Ōsaka"),
    ("en-CA", "CA", "Toronto"), ("fr-CA", "CA", "Montréal"), ("en-AU", "AU", "Melbourne"),
    ("pt-BR", "BR", "São Paulo"), ("es-ES", "ES", "Sevilla"), ("nl-NL", "NL", "Utrecht"),
]
CURRENCY_OF = {"US": "USD", "GB": "GBP", "DE": "EUR", "FR": "EUR", "ES": "EUR", "NL": "EUR",
               "JP": "JPY", "CA": "CAD", "AU": "AUD", "BR": "USD"}


def new_user(user_id: str | int | None) -> User:
    locale, country, city = rng.choice(PLACES)
    return User(user_id, uuid(), locale, country, city)


KNOWN = [new_user("usr_" + hex_id(10)) for _ in range(22)] + [new_user(4242), new_user(1001), new_user(73)]
VISITORS = [new_user(None) for _ in range(30)]
# Identity stitching: anonymous on the 13th, identified (same anonymousId) from the 14th on.
STITCH_WEB = new_user(None)
STITCH_WEB_ID = "usr_" + hex_id(10)
STITCH_MOBILE = new_user(None)
STITCH_MOBILE_ID = 90210  # an integer userId

PRODUCTS = [
    ("P-1001", "SKU-TRL-42", "Trail Runner 2", "Shoes", 129.0),
    ("P-1002", "SKU-RDS-07", "Road Sprint", "Shoes", 99.5),
    ("P-1003", "SKU-SOX-3P", "Merino Socks (3 pack)", "Accessories", 24.99),
    ("P-1004", "SKU-JKT-RN", "Rain Shell Jacket", "Apparel", 189.0),
    ("P-1005", "SKU-BTL-75", "Insulated Bottle 750 ml", "Accessories", 32.0),
    ("P-1006", "SKU-CAP-LT", "Lightweight Cap", "Apparel", 19.99),
    ("P-1007", "SKU-WCH-GP", "GPS Watch", "Electronics", 249.0),
    ("P-1008", "SKU-BLT-HR", "Heart-rate Belt", "Electronics", 59.9),
    ("P-1009", "SKU-TEE-DF", "Dri-fit Tee", "Apparel", 29.0),
    ("P-1010", "SKU-PCK-12", "Hydration Pack 12 l", "Accessories", 74.95),
    ("P-1011", "SKU-GLV-WN", "Winter Gloves", "Apparel", 34.5),
    ("P-1012", "SKU-FOM-RL", "Foam Roller", "Recovery", 27.0),
]
# Rough price multipliers; JPY is whole yen.
FX = {"USD": 1.0, "EUR": 0.97, "GBP": 0.82, "JPY": 157.0, "CAD": 1.44, "AUD": 1.61}

CAMPAIGNS = [
    {"source": "google", "medium": "cpc", "name": "winter_sale_2025"},
    {"source": "newsletter", "medium": "email", "name": "jan_week_2"},
    {"source": "facebook", "medium": "paid_social", "name": "trail_season"},
    {"source": "partner-blog", "medium": "referral", "name": "gear_review"},
]
REFERRERS = ["https://www.google.com/", "https://duckduckgo.com/", "https://news.ycombinator.com/",
             "https://www.facebook.com/", ""]
PAGES = [
    ("/", "Home | Trackhouse Outdoor"),
    ("/shoes", "Running shoes | Trackhouse Outdoor"),
    ("/apparel", "Apparel | Trackhouse Outdoor"),
    ("/blog/choosing-trail-shoes", "Choosing trail shoes — Trackhouse blog"),
    ("/cart", "Your cart | Trackhouse Outdoor"),
    ("/checkout", "Checkout | Trackhouse Outdoor"),
]
USER_AGENTS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
]
WEB_LIBRARY = {"name": "analytics.js", "version": "next-1.72.0"}
SERVER_LIBRARY = {"name": "analytics-node", "version": "2.1.2"}
DRIP_LIBRARY = {"name": "drip-webhooks", "version": "1.4.0"}
MOBILE_LIBRARIES = [
    ({"name": "analytics-ios", "version": "1.6.1"}, {"name": "iOS", "version": "18.1.1"},
     {"manufacturer": "Apple", "model": "iPhone15,3", "type": "ios"}),
    ({"name": "analytics-kotlin", "version": "1.17.0"}, {"name": "Android", "version": "14"},
     {"manufacturer": "Google", "model": "Pixel 8", "type": "android"}),
]
TIMEZONES = {"US": "America/Chicago", "GB": "Europe/London", "DE": "Europe/Berlin", "FR": "Europe/Paris",
             "JP": "Asia/Tokyo", "CA": "America/Toronto", "AU": "Australia/Melbourne",
             "BR": "America/Sao_Paulo", "ES": "Europe/Madrid", "NL": "Europe/Amsterdam"}


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


@dataclass
class Ev:
    """One track call before it is written: when it happened, who, what, from which client."""

    t: dt.datetime
    event: str
    user: User
    platform: str  # web | mobile | server
    properties: dict
    context: dict
    identified: bool = True  # send userId (if the user has one)
    send_anonymous: bool = True
    message_id: str = field(default_factory=uuid)
    skew: dt.timedelta | None = None  # client clock error: no `timestamp`, raw client times
    typed: bool = True  # write "type":"track"
    client_times: bool = True  # False: no client-side times at all (Drip: properties.occurred_at)
    sent: dt.datetime | None = None
    received: dt.datetime | None = None


def ids(ev: Ev) -> dict:
    out: dict = {}
    if ev.identified and ev.user.user_id is not None:
        out["userId"] = ev.user.user_id
    if ev.send_anonymous or "userId" not in out:
        out["anonymousId"] = ev.user.anonymous_id
    return out


def render(ev: Ev, *, sent_at: bool = True, context: bool = True) -> dict:
    """The Segment message as the collector logs it."""
    msg: dict = {}
    if ev.typed:
        msg["type"] = "track"
    msg["event"] = ev.event
    msg["messageId"] = ev.message_id
    msg.update(ids(ev))
    if not ev.client_times:
        pass
    elif ev.skew is None:
        msg["timestamp"] = iso(ev.t)
        msg["originalTimestamp"] = iso(ev.t)
        if sent_at:
            msg["sentAt"] = iso(ev.sent)
    else:  # client clock is off: the warehouse must correct it from sentAt/receivedAt
        msg["originalTimestamp"] = iso(ev.t + ev.skew)
        if sent_at:
            msg["sentAt"] = iso(ev.sent + ev.skew)
    msg["receivedAt"] = iso(ev.received)
    if ev.properties is not None:
        msg["properties"] = ev.properties
    if context and ev.context:
        msg["context"] = ev.context
    return msg


def web_context(user: User, path: str, title: str, campaign: dict | None) -> dict:
    query = ""
    if campaign:
        query = f"?utm_source={campaign['source']}&utm_medium={campaign['medium']}&utm_campaign={campaign['name']}"
    ctx: dict = {
        "page": {
            "path": path,
            "referrer": rng.choice(REFERRERS),
            "search": query,
            "title": title,
            "url": f"https://shop.trackhouse.example{path}{query}",
        },
        "library": WEB_LIBRARY,
        "ip": doc_ip(),
        "userAgent": rng.choice(USER_AGENTS),
        "locale": user.locale,
        "timezone": TIMEZONES[user.country],
    }
    if campaign:
        ctx["campaign"] = dict(campaign)
    return ctx


def mobile_context(user: User, library: tuple) -> dict:
    lib, os_info, device = library
    return {
        "app": {"name": "Trackhouse", "version": "3.8.0", "build": "3080"},
        "device": {**device, "id": user.anonymous_id},
        "library": lib,
        "os": os_info,
        "locale": user.locale,
        "network": {"wifi": rng.random() < 0.6, "carrier": rng.choice(["T-Mobile", "Vodafone", "Orange"])},
        "screen": {"width": 393, "height": 852},
        "ip": doc_ip(),
        "timezone": TIMEZONES[user.country],
    }


def server_context(ip: bool = True) -> dict:
    ctx: dict = {"library": SERVER_LIBRARY}
    if ip:
        ctx["ip"] = doc_ip()
    return ctx


def product_props(product: tuple, **extra: Any) -> dict:
    pid, sku, name, category, price = product
    return {"productID": pid, "sku": sku, "productName": name, "category": category, "price": price, **extra}


def order_properties(user: User, forced_currency: str | None | bool = False, revenue_as_string: bool = False) -> dict:
    """An "Order Completed" in the customer's currency (some lower case, some absent = USD)."""
    lines = rng.sample(PRODUCTS, rng.randint(1, 3))
    if forced_currency is False:
        currency = CURRENCY_OF[user.country]
        style = weighted([("as_is", 7), ("lower", 1), ("absent", 2 if currency == "USD" else 0)])
    else:
        currency = (forced_currency or "USD").upper()
        style = "absent" if forced_currency is None else ("lower" if forced_currency.islower() else "as_is")
    rate = FX[currency]
    products = []
    total = 0.0
    for pid, sku, name, category, price in lines:
        qty = rng.choice([1, 1, 1, 2])
        unit = round(price * rate) if currency == "JPY" else round(price * rate, 2)
        total += unit * qty
        products.append({"productID": pid, "sku": sku, "name": name, "price": unit, "quantity": qty})
    revenue: Any = int(total) if currency == "JPY" else round(total, 2)
    if revenue_as_string:
        revenue = f"{revenue:.2f}" if isinstance(revenue, float) else str(revenue)
    props: dict = {"orderId": "ord_" + hex_id(8), "revenue": revenue}
    if style == "as_is":
        props["currency"] = currency
    elif style == "lower":
        props["currency"] = currency.lower()
    props["products"] = products
    address: dict = {"city": user.city, "country": user.country}
    if rng.random() < 0.3:
        address["geo"] = {"lat": round(rng.uniform(-40, 60), 4), "lon": round(rng.uniform(-120, 140), 4)}
    props["shippingAddress"] = address
    if rng.random() < 0.3:
        props["coupon"] = rng.choice(["WINTER10", "FREESHIP", "WELCOME5"])
    if rng.random() < 0.4:
        props["tags"] = rng.sample(["gift", "express", "first_order", "repeat"], rng.randint(1, 2))
    return props


def trial_properties(t: dt.datetime, value: Any = "random") -> dict:
    """Drip's "Signed up for a trial" goal: value in cents (int or integer string) or none."""
    props: dict = {"plan": rng.choice(["Pro", "Team"]), "trialDays": 14, "occurred_at": iso(t)}
    if value == "random":
        value = weighted([(2000, 5), ("2000", 2), (4900, 2), (None, 3)])
    if value is not None:
        props["value"] = value
    return props


def session(day: str, user: User, platform: str, start: dt.datetime, kind: str) -> list[Ev]:
    """A plausible run of events for one visit."""
    evs: list[Ev] = []
    t = start
    campaign = rng.choice(CAMPAIGNS) if rng.random() < 0.45 else None
    library = rng.choice(MOBILE_LIBRARIES)

    def step(low: int = 5, high: int = 240) -> dt.datetime:
        nonlocal t
        t = t + dt.timedelta(seconds=rng.randint(low, high), milliseconds=rng.randint(0, 999))
        return t

    def client_event(name: str, props: dict, page: tuple = PAGES[0]) -> Ev:
        if platform == "web":
            ctx = web_context(user, page[0], page[1], campaign)
        else:
            ctx = mobile_context(user, library)
        return Ev(step(), name, user, platform, props, ctx)

    page = rng.choice(PAGES[:4])
    evs.append(client_event("Page Scrolled", {"depth": rng.choice([25, 50, 75, 100]), "pagePath": page[0]}, page))
    viewed = rng.sample(PRODUCTS, rng.randint(1, 3))
    if rng.random() < 0.3:
        evs.append(client_event("Products Searched", {"query": rng.choice(["trail shoes", "gloves", "gps watch", "socks"]),
                                                      "resultsCount": rng.randint(0, 40)}, PAGES[1]))
    for product in viewed:
        evs.append(client_event("Product Viewed", product_props(product, currency="USD"), PAGES[1]))
    if rng.random() < 0.25:
        evs.append(client_event("Video Played", {"videoId": "vid_" + hex_id(6), "title": "How we test trail shoes",
                                                 "position": 0, "totalLength": rng.randint(60, 600),
                                                 "sound": rng.random() < 0.7, "fullScreen": False}, PAGES[3]))
    if kind in ("shopper", "buyer"):
        product = viewed[0]
        evs.append(client_event("Product Added", product_props(product, quantity=rng.choice([1, 1, 2]),
                                                               cartId="cart_" + hex_id(6)), PAGES[1]))
        if kind == "buyer":
            if rng.random() < 0.3:
                evs.append(client_event("Coupon Applied", {"couponId": "WINTER10", "discount": 10.0}, PAGES[4]))
            evs.append(client_event("Checkout Started", {"orderId": "chk_" + hex_id(8), "step": 1,
                                                         "products": [{"productID": product[0], "sku": product[1]}]},
                                    PAGES[5]))
            # The order itself is confirmed by the backend.
            evs.append(Ev(step(2, 30), "Order Completed", user, "server", order_properties(user),
                          server_context(), send_anonymous=rng.random() < 0.5))
    if kind == "subscriber":
        evs.append(client_event("Newsletter Subscribed", {"listName": "Weekly digest",
                                                          "source": rng.choice(["footer", "popup", "checkout"]),
                                                          "tags": ["running", "deals"]}))
    if kind == "trial" and user.user_id is not None:
        evs.append(Ev(step(10, 90), "Signed up for a trial", user, "server", trial_properties(t),
                      {"library": DRIP_LIBRARY}, send_anonymous=False))
    return evs


def regular_events(day: str) -> list[Ev]:
    evs: list[Ev] = []
    for _ in range(38):
        start = at(day, rng.randint(0, 21), rng.randint(20, 59), rng.uniform(0, 59))
        known = rng.random() < 0.6
        user = rng.choice(KNOWN) if known else rng.choice(VISITORS)
        platform = "mobile" if rng.random() < 0.3 else "web"
        kind = weighted([("browser", 4), ("shopper", 2), ("buyer", 3 if known else 1), ("subscriber", 1),
                         ("trial", 2 if known else 0)])
        evs.extend(session(day, user, platform, start, kind))
    return evs


def stitched_events(day: str) -> list[Ev]:
    """Two people who browse anonymously on the 13th and are identified from the 14th."""
    evs: list[Ev] = []
    if day == "2025-01-13":
        evs += session(day, STITCH_WEB, "web", at(day, 9, 12, 3.5), "shopper")
        evs += session(day, STITCH_MOBILE, "mobile", at(day, 19, 40, 12.25), "browser")
    elif day == "2025-01-14":
        web = User(STITCH_WEB_ID, STITCH_WEB.anonymous_id, STITCH_WEB.locale, STITCH_WEB.country, STITCH_WEB.city)
        mob = User(STITCH_MOBILE_ID, STITCH_MOBILE.anonymous_id, STITCH_MOBILE.locale, STITCH_MOBILE.country,
                   STITCH_MOBILE.city)
        evs += session(day, web, "web", at(day, 8, 2, 41.0), "trial")
        evs += session(day, mob, "mobile", at(day, 12, 30, 5.0), "buyer")
    else:
        web = User(STITCH_WEB_ID, STITCH_WEB.anonymous_id, STITCH_WEB.locale, STITCH_WEB.country, STITCH_WEB.city)
        evs += session(day, web, "web", at(day, 10, 5, 0.75), "buyer")
    return evs


def forced_valid_events(day: str) -> list[Ev]:
    """Cases the random mix might miss: every currency style, string revenue/value, edge names."""
    evs: list[Ev] = []
    buyers = rng.sample(KNOWN, 6)
    hour = 6
    for user, currency in zip(buyers, ["JPY", "eur", None, "GBP", "CAD", "AUD"]):
        hour += 2
        t = at(day, hour, rng.randint(0, 59), rng.uniform(0, 59))
        evs.append(Ev(t, "Order Completed", user, "server", order_properties(user, currency), server_context()))
    t = at(day, 17, 3, 9.5)
    evs.append(Ev(t, "Order Completed", buyers[0], "server",
                  order_properties(buyers[0], "USD", revenue_as_string=True), server_context()))
    for value, hour in ((2000, 11), ("2000", 15), (None, 20)):
        user = rng.choice([u for u in KNOWN if isinstance(u.user_id, str)])
        t = at(day, hour, rng.randint(0, 59), rng.uniform(0, 59))
        evs.append(Ev(t, "Signed up for a trial", user, "server", trial_properties(t, value),
                      {"library": DRIP_LIBRARY}, send_anonymous=False))
    # Clock-skewed clients: no `timestamp`, only originalTimestamp + sentAt + receivedAt.
    for hour, skew_minutes in ((7, 37), (13, -95), (18, 4)):
        user = rng.choice(VISITORS)
        t = at(day, hour, rng.randint(0, 59), rng.uniform(0, 59))
        page = PAGES[2]
        evs.append(Ev(t, "Product Viewed", user, "web", product_props(rng.choice(PRODUCTS)),
                      web_context(user, page[0], page[1], None), skew=dt.timedelta(minutes=skew_minutes)))
    # A message without "type" is a track message; integer userIds.
    user = KNOWN[-3]  # 4242
    t = at(day, 14, 44, 1.0)
    evs.append(Ev(t, "Product Added", user, "web",
                  product_props(PRODUCTS[6], quantity=1, cartId="cart_" + hex_id(6)),
                  web_context(user, PAGES[1][0], PAGES[1][1], None), typed=False))
    if day == "2025-01-13":
        # A Drip event with only properties.occurred_at and receivedAt as times.
        user = KNOWN[0]
        t = at(day, 16, 20, 0.0)
        ev = Ev(t, "Signed up for a trial", user, "server", trial_properties(t, 2000), {"library": DRIP_LIBRARY},
                send_anonymous=False)
        ev.typed = False
        ev.client_times = False
        evs.append(ev)
    if day == "2025-01-14":
        # "quantity" changes type within one event name: int earlier, then a string.
        user = KNOWN[4]
        t = at(day, 21, 15, 30.0)
        evs.append(Ev(t, "Product Added", user, "web",
                      product_props(PRODUCTS[2], quantity="two", cartId="cart_" + hex_id(6)),
                      web_context(user, PAGES[1][0], PAGES[1][1], None)))
        # The same event written differently by a second integration.
        t = at(day, 16, 48, 12.0)
        evs.append(Ev(t, "order_completed", KNOWN[5], "server", order_properties(KNOWN[5], "USD"),
                      {"library": {"name": "analytics-python", "version": "2.3.3"}}, send_anonymous=False))
        # A goal name with other case and surrounding space (Drip matches ignoring both).
        t = at(day, 9, 58, 2.0)
        evs.append(Ev(t, " signed up for a Trial ", KNOWN[6], "server", trial_properties(t, 2000),
                      {"library": DRIP_LIBRARY}, send_anonymous=False))
        # Happened a few seconds before midnight, received just after: received day is the 14th.
        user = KNOWN[7]
        t = at("2025-01-13", 23, 59, 58.25)
        ev = Ev(t, "Page Scrolled", user, "web", {"depth": 100, "pagePath": "/"},
                web_context(user, "/", PAGES[0][1], None))
        ev.sent = at(day, 0, 0, 0.5)
        ev.received = at(day, 0, 0, 1.125)
        evs.append(ev)
    if day == "2025-01-15":
        # Late events: an app that was offline since the 12th/13th flushes its queue.
        user = KNOWN[8]
        lib = MOBILE_LIBRARIES[1]
        for t in (at("2025-01-12", 18, 22, 10.5), at("2025-01-12", 18, 24, 47.0)):
            ev = Ev(t, "Video Played", user, "mobile", {"videoId": "vid_offline1", "title": "Stretching basics",
                                                         "position": 0, "totalLength": 420, "sound": False,
                                                         "fullScreen": True}, mobile_context(user, lib))
            ev.sent = at(day, 8, 1, 2.0)
            ev.received = at(day, 8, 1, 2.5)
            evs.append(ev)
        # A late one without `timestamp`: its corrected time lands on the 13th.
        t = at("2025-01-13", 21, 10, 0.0)
        ev = Ev(t, "Product Viewed", user, "mobile", product_props(PRODUCTS[9]), mobile_context(user, lib),
                skew=dt.timedelta(minutes=3))
        ev.sent = at(day, 8, 1, 2.0)
        ev.received = at(day, 8, 1, 2.5)
        evs.append(ev)
    return evs


def schedule(ev: Ev) -> None:
    """When the client sent it and when the collector received it."""
    if ev.sent is None:
        delay = {"web": ms(20, 1500), "mobile": ms(500, 45_000), "server": ms(5, 400)}[ev.platform]
        ev.sent = ev.t + delay
    if ev.received is None:
        ev.received = ev.sent + ms(25, 450)


# --------------------------------------------------------------------------------------------
# Lines: plain messages, batch envelopes, and the bad lines for every reason code
# --------------------------------------------------------------------------------------------


@dataclass
class Line:
    """One physical line of a log file, ordered by when the collector logged it."""

    at: dt.datetime
    data: bytes


def line_of(value: Any) -> bytes:
    return value if isinstance(value, bytes) else dumps(value)


def envelope(evs: list[Ev], library: dict, extras: list[tuple[int, Any]] = (), skew: dt.timedelta | None = None) -> Line:
    """A batch as the HTTP batch endpoint receives it: shared sentAt and context.library."""
    sent = max(ev.t for ev in evs) + ms(800, 20_000)
    received = sent + ms(40, 400)
    shown_sent = sent + (skew or dt.timedelta(0))
    messages: list[Any] = []
    for i, ev in enumerate(evs):
        ev.sent, ev.received = sent, received
        keep_sent = i == 1  # one message repeats sentAt itself (its own value wins; same here)
        msg = render(ev, sent_at=keep_sent)
        ctx = dict(ev.context or {})
        if ctx.get("library") == library and i != 2:  # one message repeats the shared library
            del ctx["library"]
        if ctx:
            msg["context"] = ctx
        else:
            msg.pop("context", None)
        messages.append(msg)
    for position, extra in extras:
        messages.insert(position, extra)
    body = {"batch": messages, "sentAt": iso(shown_sent), "context": {"library": library}}
    return Line(received, dumps(body))


def valid_base(day: str, hour: int, minute: int, event: str = "Product Viewed", **changes: Any) -> dict:
    """A valid web message to damage on purpose; `changes` replace or (value None) remove keys."""
    user = rng.choice(KNOWN)
    t = at(day, hour, minute, rng.uniform(0, 59))
    ev = Ev(t, event, user, "web", product_props(rng.choice(PRODUCTS)), {"library": WEB_LIBRARY, "ip": doc_ip()})
    schedule(ev)
    msg = render(ev)
    for key, value in changes.items():
        if value is None:
            msg.pop(key, None)
        else:
            msg[key] = value
    return msg


def with_props(msg: dict, **props: Any) -> dict:
    msg["properties"] = {**msg.get("properties", {}), **props}
    return msg


def received_of(msg: dict, day: str) -> dt.datetime:
    value = msg.get("receivedAt") if isinstance(msg, dict) else None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return at(day, 12, 0)


LONG_EVENT = "Clicked the promotional banner about winter running gear on the home page "
LONG_EVENT = LONG_EVENT + "x" * (201 - len(LONG_EVENT))
assert len(LONG_EVENT) == 201


def bad_lines(day: str) -> dict[str, list[Any]]:
    """Lines that must be quarantined, by traffic kind (the file they go to). Values are dicts
    (serialised) or raw bytes (written as they are)."""
    web: list[Any] = []
    mobile: list[Any] = []
    server: list[Any] = []
    long_id = "u" + "0123456789abcdef" * 16
    long_id = long_id[:256]
    if day == "2025-01-13":
        web += [
            b'{"type":"track","event":"Order Compl',  # invalid_json: truncated
            [{"type": "track", "event": "Product Viewed"}],  # not_an_object: array
            "Product Viewed",  # not_an_object: string
            with_props(valid_base(day, 10, 5), notes="lorem ipsum dolor sit amet " * 1250),  # payload_too_large
            valid_base(day, 10, 31, event=None),  # missing_event: absent
            valid_base(day, 11, 2, event=None, type=None) | {"event": None},  # missing_event: null
            valid_base(day, 11, 40, event=LONG_EVENT),  # event_too_long: 201 characters
            valid_base(day, 12, 12, userId=None, anonymousId=None),  # missing_identity: no ids
            valid_base(day, 12, 50, anonymousId=None) | {"userId": ""},  # missing_identity: empty
            valid_base(day, 13, 25, properties=["productID", "P-1001"]),  # invalid_properties: list
            valid_base(day, 14, 3, properties={f"attr_{i:03d}": i for i in range(256)}),  # too_many_properties
            valid_base(day, 14, 48, timestamp="yesterday"),  # invalid_timestamp
        ]
        server += [
            {"type": "identify", "userId": KNOWN[1].user_id, "messageId": uuid(),
             "traits": {"plan": "Pro", "createdAt": "2024-11-02T09:00:00.000Z"},
             "timestamp": "2025-01-13T09:41:07.000Z", "receivedAt": "2025-01-13T09:41:07.210Z"},  # unsupported_type
            valid_base(day, 15, 20, "Order Completed", properties={"orderId": "ord_bad00001", "revenue": "abc",
                                                                   "currency": "USD"}),  # invalid_revenue
            valid_base(day, 16, 11, "Order Completed", properties={"orderId": "ord_bad00002", "revenue": 49.0,
                                                                   "currency": "EURO"}),  # invalid_currency
            valid_base(day, 17, 36, "Signed up for a trial", properties={"plan": "Pro", "value": 20.5}),  # invalid_value
        ]
        mobile += [b""]
        server += [b""]
    elif day == "2025-01-14":
        web += [
            b'{"type":"track","event":"Bad \xff","anonymousId":"a1"}',  # invalid_json: invalid UTF-8
            42,  # not_an_object: number
            None,  # not_an_object: null
            {"type": "page", "name": "Home", "anonymousId": VISITORS[0].anonymous_id, "messageId": uuid(),
             "properties": {"path": "/", "title": "Home"}, "timestamp": "2025-01-14T07:12:44.118Z",
             "receivedAt": "2025-01-14T07:12:44.402Z"},  # unsupported_type: page
            valid_base(day, 7, 30, event="   "),  # missing_event: blank
            valid_base(day, 8, 14, event=1234),  # missing_event: number
            valid_base(day, 9, 9, event="$purchase"),  # reserved_event_name
            valid_base(day, 10, 1, anonymousId=None, userId=True),  # missing_identity: boolean
            valid_base(day, 10, 45, anonymousId=None, userId=1.5),  # missing_identity: fraction
            valid_base(day, 11, 30, userId=long_id),  # identity_too_long
            valid_base(day, 12, 6, properties="productID=P-1001"),  # invalid_properties: string
            with_props(valid_base(day, 13, 0), meta={"k" * 256: True}),  # property_name_too_long (nested)
            with_props(valid_base(day, 13, 44), a={"b": {"c": {"d": 1}}}),  # properties_too_deep
            valid_base(day, 14, 22) | {"context": {"library": WEB_LIBRARY,  # array_too_long: in context
                                                   "experiments": [f"exp{i}" for i in range(256)]}},
            valid_base(day, 15, 5, originalTimestamp="12/01/2025"),  # invalid_timestamp
            valid_base(day, 15, 50, sentAt=1736899200000),  # invalid_timestamp: epoch millis
        ]
        server += [
            valid_base(day, 16, 30, "Order Completed", properties={"orderId": "ord_bad00003", "revenue": True,
                                                                   "currency": "USD"}),  # invalid_revenue
            valid_base(day, 17, 2, "Order Completed", properties={"orderId": "ord_bad00004", "revenue": 120.0,
                                                                  "currency": "DEM"}),  # invalid_currency: withdrawn
            valid_base(day, 18, 18, "Signed up for a trial", properties={"plan": "Team", "value": "20.5"}),
            valid_base(day, 19, 40, "Signed up for a trial", properties={"plan": "Team", "value": -1}),
        ]
        web += [b"", b""]
        mobile += [b""]
    else:
        mobile += [
            b'{"batch":[{"type":"track","event":"Product Viewed"',  # invalid_json: truncated envelope
            ["Product Viewed", "Order Completed"],  # not_an_object: array
            valid_base(day, 9, 41) | {"properties": {"productIds": [f"P-{i:04d}" for i in range(256)]}},
            # ^ array_too_long: in properties
            {"type": "track", "properties": "oops"},  # missing_event + missing_identity + invalid_properties
        ]
        server += [
            valid_base(day, 11, 5, "Signed up for a trial",
                       properties={"plan": "Pro", "value": 2000, "occurred_at": "soon"}),  # invalid_timestamp
            valid_base(day, 12, 33, "Order Completed", properties={"orderId": "ord_bad00005", "revenue": {"x": 1},
                                                                   "currency": "USD"}),  # invalid_revenue: object
            valid_base(day, 13, 7, "Order Completed", properties={"orderId": "ord_bad00006", "revenue": 15.0,
                                                                  "currency": 978}),  # invalid_currency: number
            valid_base(day, 14, 52, "Signed up for a trial",
                       properties={"plan": "Pro", "value": 2147483648}),  # invalid_value: over int32
            valid_base(day, 16, 0, "$identify"),  # reserved_event_name
            valid_base(day, 17, 17, userId=None, anonymousId="   "),  # missing_identity: blank anonymousId
        ]
        mobile += [b""]
    return {"web": web, "mobile": mobile, "server": server}


def bad_batch_items() -> list[tuple[int, Any]]:
    """Bad elements inside an otherwise good envelope: a message with no event, a number."""
    return [(1, {"type": "track", "messageId": uuid(), "userId": KNOWN[2].user_id,
                 "properties": {"plan": "Pro"}}),
            (3, 7)]


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def encode_file(lines: list[bytes], *, crlf: bool = False, bom: bool = False) -> bytes:
    end = b"\r\n" if crlf else b"\n"
    data = end.join(lines) + end
    return (BOM + data) if bom else data


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def batch_groups(pool: list[Ev], key, max_span: dt.timedelta, chance: float,
                 min_size: int = 2, max_size: int = 6) -> list[list[Ev]]:
    """Runs of messages of one sender (same key), close in time, that a client would batch."""
    by_sender: dict[Any, list[Ev]] = {}
    for ev in pool:
        by_sender.setdefault(key(ev), []).append(ev)
    groups = []
    for evs in by_sender.values():
        i = 0
        while i < len(evs):
            j = i + 1
            while j < len(evs) and j - i < max_size and evs[j].t - evs[i].t <= max_span:
                j += 1
            if j - i >= min_size and rng.random() < chance:
                groups.append(evs[i:j])
                i = j
            else:
                i += 1
    return groups


def build_day(day: str) -> dict[str, bytes]:
    evs = regular_events(day) + stitched_events(day) + forced_valid_events(day)
    routes = FILES[day]
    by_file: dict[str, list[Ev]] = {}
    for ev in evs:
        by_file.setdefault(routes[ev.platform], []).append(ev)
    out_lines: dict[str, list[Line]] = {name: [] for name in sorted(set(routes.values()))}
    bad_items_placed = False
    batched_all: list[list[Ev]] = []

    for name in sorted(by_file):
        file_evs = sorted(by_file[name], key=lambda e: (e.t, e.message_id))
        # Pack close runs of server messages and of one device's messages into batch envelopes.
        server_evs = [e for e in file_evs if e.platform == "server" and e.skew is None and e.sent is None]
        mobile_evs = [e for e in file_evs if e.platform == "mobile" and e.skew is None and e.sent is None]
        batched = batch_groups(server_evs, lambda e: e.context.get("library", {}).get("name"),
                               dt.timedelta(minutes=20), chance=0.8)
        batched += batch_groups(mobile_evs, lambda e: e.user.anonymous_id, dt.timedelta(minutes=4), chance=0.7)
        batched.sort(key=lambda group: group[0].t)
        batched_all += batched
        in_batch = {id(e) for group in batched for e in group}
        singles = [e for e in file_evs if id(e) not in in_batch]
        for ev in singles:
            schedule(ev)
            out_lines[name].append(Line(ev.received, dumps(render(ev))))
        for group in batched:
            library = group[0].context.get("library", SERVER_LIBRARY)
            extras = [] if bad_items_placed else bad_batch_items()  # once a day
            bad_items_placed = True
            out_lines[name].append(envelope(group, library, extras))

    assert len(batched_all) >= 2, f"{day}: too few batch envelopes"

    # A mobile batch from a phone whose clock is 6 minutes fast: no `timestamp` in it at all.
    user = rng.choice(KNOWN)
    lib = MOBILE_LIBRARIES[0]
    skew = dt.timedelta(minutes=6, seconds=12)
    t0 = at(day, 18, 5, 0.0)
    group = []
    for k, (name, props) in enumerate([("Product Viewed", product_props(PRODUCTS[3])),
                                       ("Product Added", product_props(PRODUCTS[3], quantity=1, cartId="cart_" + hex_id(6))),
                                       ("Checkout Started", {"orderId": "chk_" + hex_id(8), "step": 1})]):
        group.append(Ev(t0 + dt.timedelta(seconds=40 * k), name, user, "mobile", props, mobile_context(user, lib),
                        skew=skew))
    out_lines[routes["mobile"]].append(envelope(group, lib[0], skew=skew))

    # Bad lines, spread through their files at random positions.
    for kind, values in bad_lines(day).items():
        name = routes[kind]
        for value in values:
            lines = out_lines[name]
            when = received_of(value, day) if isinstance(value, dict) else None
            data = line_of(value) if not isinstance(value, bytes) else value
            if when is None:
                neighbour = lines[rng.randrange(len(lines))] if lines else None
                when = neighbour.at if neighbour else at(day, 12, 0)
            lines.append(Line(when, data))

    # Duplicates. Within the day: a message of the first file again in a later file.
    names = sorted(out_lines)
    if day == "2025-01-13":
        first = names[0]  # mobile.ndjson sorts before server.jsonl: the mobile copy wins
        original = next(l for l in out_lines[first] if l.data.startswith(b'{"type":"track"'))
        out_lines["server.jsonl"].append(Line(original.at + dt.timedelta(minutes=5), original.data))
    if day == "2025-01-14":
        # A retry logged twice in the same file: the earlier line wins.
        original = next(l for l in out_lines["web.ndjson.gz"] if l.data.startswith(b'{"type":"track"'))
        out_lines["web.ndjson.gz"].append(Line(original.at + dt.timedelta(seconds=30), original.data))
    if day == "2025-01-15":
        original = next(l for l in out_lines["collector.jsonl.gz"] if l.data.startswith(b'{"type":"track"'))
        out_lines["mobile.ndjson"].append(Line(original.at + dt.timedelta(seconds=2), original.data))

    files: dict[str, bytes] = {}
    for name, lines in out_lines.items():
        lines.sort(key=lambda l: l.at)  # stable: ties keep insertion order
        data = encode_file([l.data for l in lines], **FILE_FORMAT.get((day, name), {}))
        files[name] = gz(data) if name.endswith(".gz") else data
    return files


def cross_day_duplicate(files: dict[str, dict[str, bytes]]) -> None:
    """The collector redelivered a message of the 13th after midnight: same messageId on the 14th."""
    source = files["2025-01-13"]["mobile.ndjson"].split(b"\n")
    original = next(l for l in reversed(source) if l.startswith(b'{"type":"track"'))  # the day's last single
    msg = orjson_loads(original)
    msg["receivedAt"] = "2025-01-14T00:03:17.402Z"
    target = files["2025-01-14"]["mobile.jsonl"]
    end = b"\r\n" if FILE_FORMAT.get(("2025-01-14", "mobile.jsonl"), {}).get("crlf") else b"\n"
    files["2025-01-14"]["mobile.jsonl"] = dumps(msg) + end + target


def orjson_loads(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except NameError:  # pragma: no cover
        return json.loads(data)


def truncated_file() -> bytes:
    """~20 good web lines, gzipped, with the last 30% of the compressed bytes cut off."""
    day = TRUNCATED[0]
    lines = []
    for k in range(20):
        user = rng.choice(VISITORS)
        t = at(day, 20, 10 + k, rng.uniform(0, 59))
        product = rng.choice(PRODUCTS)
        ev = Ev(t, "Product Viewed", user, "web", product_props(product),
                web_context(user, PAGES[1][0], PAGES[1][1], None))
        schedule(ev)
        lines.append(dumps(render(ev)))
    whole = gz(encode_file(lines))
    return whole[: int(len(whole) * 0.7)]


README = """\
Sample track logs for trackhouse (generated by scripts/make_samples.py; do not edit by hand).

This file is not a log file: the loader must ignore it and name it in the run's log.
Each YYYY-MM-DD folder is one received day. See CONTRACT.md sections 1 and 2 for what
every line is expected to become.
"""


def main() -> None:
    files: dict[str, dict[str, bytes]] = {}
    for day in DAYS:
        files[day] = build_day(day)
    cross_day_duplicate(files)
    files[TRUNCATED[0]][TRUNCATED[1]] = truncated_file()
    files["2025-01-14"]["README.txt"] = README.encode()

    if OUT.exists():
        shutil.rmtree(OUT)
    total_bytes = 0
    total_lines = 0
    print(f"{'file':42} {'lines':>6} {'bytes':>9}  sha256")
    for day in DAYS:
        folder = OUT / day
        folder.mkdir(parents=True)
        for name in sorted(files[day]):
            data = files[day][name]
            (folder / name).write_bytes(data)
            if name.endswith(".gz"):
                try:
                    plain = gzip.decompress(data)
                except EOFError:
                    plain = b""  # the deliberately truncated file
                    lines = "broken"
                else:
                    lines = plain.count(b"\n")
            else:
                lines = data.count(b"\n")
            total_bytes += len(data)
            total_lines += lines if isinstance(lines, int) else 0
            print(f"{day + '/' + name:42} {lines!s:>6} {len(data):>9}  {hashlib.sha256(data).hexdigest()[:12]}")
    count = sum(len(v) for v in files.values())
    print(f"{count} files, {total_lines} lines (readable files), {total_bytes:,} bytes in {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
