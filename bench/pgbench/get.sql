-- The service's GET: one row by primary key (the name is built as in bench/run's load).
\set n random(1, :users)
SELECT "users"."username", "users"."date_of_birth", "users"."updated_at" FROM "users"
 WHERE "users"."username" = 'u' || translate(lpad(:n::text, 6, '0'), '0123456789', 'abcdefghij') LIMIT 1;
