-- One row per event with a revenue, in its own currency and in USD (the rate of the event's
-- date, else the latest earlier one; NULL, never 0, without any), with the user's first-touch
-- campaign source. Money is DECIMAL(18, 4): exact sums, and 4 decimals cover every ISO 4217
-- minor unit; rates are DECIMAL(20, 14), so revenue_usd is rounded exactly (half away from
-- zero). An amount of 10^14 or more is no order: it is NULL here (tracks keeps it), so one
-- absurd line cannot overflow the refresh.
with tracks as (
    select * from stg_tracks
),

rates as (
    select * from fx_rates
),

orders as (
    select
        message_id, event, event_date, timestamp, user_key, currency,
        case when abs(revenue) < 1e14 then cast(revenue as decimal(18, 4)) end as revenue
    from tracks
    where revenue is not null
),

first_touch as (
    select user_key, context_campaign_source as campaign_source
    from tracks
    where context_campaign_source is not null
    qualify row_number() over (
        partition by user_key
        order by timestamp nulls last, message_id
    ) = 1
),

priced as (
    select
        orders.*,
        case when orders.currency = 'USD' then 1.0 else rates.rate_to_usd end as rate_to_usd
    from orders
    asof left join rates
        on orders.currency = rates.currency
        and orders.event_date >= rates.date
)

select
    priced.message_id,
    priced.event,
    priced.event_date,
    priced.user_key,
    priced.revenue,
    priced.currency,
    round(cast(priced.revenue as decimal(38, 4)) * priced.rate_to_usd, 4) as revenue_usd,
    first_touch.campaign_source
from priced
left join first_touch using (user_key)
