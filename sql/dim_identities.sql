-- One row per anonymous_id: the user_id it is stitched to (NULL while never identified),
-- and when it was first and last seen.
with tracks as (
    select * from stg_tracks
),

anonymous_activity as (
    select
        anonymous_id,
        min(timestamp) as first_seen_at,
        max(timestamp) as last_seen_at,
        count(*) as events
    from tracks
    where anonymous_id is not null
    group by anonymous_id
),

stitched as (
    select anonymous_id, user_id
    from tracks
    where anonymous_id is not null and user_id is not null
    qualify row_number() over (
        partition by anonymous_id
        order by timestamp desc nulls first, message_id desc
    ) = 1
)

select
    anonymous_activity.anonymous_id,
    stitched.user_id,
    anonymous_activity.first_seen_at,
    anonymous_activity.last_seen_at,
    anonymous_activity.events
from anonymous_activity
left join stitched using (anonymous_id)
