-- One row per event_date and goal: conversions, converting users, value, and the share of
-- that day's active users who converted.
with conversions as (
    select * from fct_conversions
),

active_users_by_day as (
    select * from daily_active_users
),

per_goal as (
    select
        event_date,
        goal,
        count(*) as conversions,
        count(distinct user_key) as converting_users,
        cast(sum(value_cents) as bigint) as value_cents
    from conversions
    group by event_date, goal
)

select
    per_goal.event_date,
    per_goal.goal,
    per_goal.conversions,
    per_goal.converting_users,
    per_goal.value_cents,
    active_users_by_day.active_users,
    per_goal.converting_users / active_users_by_day.active_users as conversion_rate
from per_goal
inner join active_users_by_day using (event_date)
