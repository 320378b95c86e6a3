-- One row per event whose name is a goal's (ignoring case and surrounding space): a Drip
-- conversion, worth properties.value cents, else the goal's default. goal_key (a macro of
-- etl/models.py, shared with the seed checks) lower-cases and strips any Unicode white space
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
        on goal_key(tracks.event_text) = goal_key(goal_definitions.name)
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
