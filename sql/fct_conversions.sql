-- One row per event whose name is a goal's (ignoring case and surrounding space): a Drip
-- conversion, worth properties.value cents, else the goal's default. "Space" is any white space
-- (tabs, newlines, no-break spaces), which trim() alone would keep.
with tracks as (
    select * from stg_tracks
),

goal_definitions as (
    select * from goals
),

matched as (
    select
        tracks.message_id,
        tracks.event_date,
        tracks.timestamp,
        tracks.user_key,
        goal_definitions.name as goal,
        coalesce(tracks.value, goal_definitions.default_value_cents) as value_cents
    from tracks
    inner join goal_definitions
        on lower(regexp_replace(tracks.event_text, '^[\s\pZ]+|[\s\pZ]+$', '', 'g'))
            = lower(regexp_replace(goal_definitions.name, '^[\s\pZ]+|[\s\pZ]+$', '', 'g'))
)

select
    message_id,
    event_date,
    user_key,
    goal,
    value_cents,
    row_number() over (
        partition by user_key, goal
        order by timestamp nulls last, message_id
    ) = 1 as is_first_for_user
from matched
