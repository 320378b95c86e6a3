-- One row per event_date and currency: money is never added across currencies here;
-- revenue_usd is NULL where the currency had no rate.
with orders as (
    select * from fct_orders
)

select
    event_date,
    currency,
    count(*) as orders,
    sum(revenue) as revenue,
    sum(revenue_usd) as revenue_usd,
    count(distinct user_key) as paying_users
from orders
group by event_date, currency
