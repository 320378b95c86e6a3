-- One row per message_id over all received days: the earliest received copy wins, and
-- user_key stitches anonymous activity to the user_id last seen with that anonymous_id.
-- The raw `properties` JSON stays in tracks (typed, in the event tables): carrying it through
-- the window functions would triple the refresh's time and memory.
with source as not materialized (
    select * exclude (properties) from tracks
),

repeated_ids as (
    select message_id
    from tracks
    group by message_id
    having count(*) > 1
),

first_received as not materialized (
    -- Only ids received more than once are ranked: a window over every row would sort the
    -- whole warehouse, payload and all (10 s of an 11 s refresh at 1M events).
    select *
    from source
    anti join repeated_ids using (message_id)

    union all

    select *
    from source
    semi join repeated_ids using (message_id)
    qualify row_number() over (
        partition by message_id
        order by received_date, received_at nulls last, source_file, line_number, batch_index nulls first
    ) = 1
),

identified as (
    select anonymous_id, user_id, timestamp, message_id
    from first_received
    where anonymous_id is not null and user_id is not null
),

last_user_per_anonymous_id as (
    select anonymous_id, user_id as stitched_user_id
    from identified
    qualify row_number() over (
        partition by anonymous_id
        order by timestamp desc nulls first, message_id desc
    ) = 1
)

select
    first_received.*,
    coalesce(first_received.user_id, stitched.stitched_user_id, first_received.anonymous_id) as user_key
from first_received
left join last_user_per_anonymous_id as stitched using (anonymous_id)
