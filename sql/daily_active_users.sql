-- One row per event_date: distinct users (user_key) with any event, and events that day.
with tracks as (
    select * from stg_tracks
)

select
    event_date,
    count(distinct user_key) as active_users,
    count(*) as events
from tracks
group by event_date
