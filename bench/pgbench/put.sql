-- The service's PUT: one upsert of an existing user.
\set n random(1, :users)
\set d random(0, 18000)
INSERT INTO "users" ("username", "date_of_birth", "updated_at")
 VALUES ('u' || translate(lpad(:n::text, 6, '0'), '0123456789', 'abcdefghij'), date '1950-01-01' + :d::integer, now())
 ON CONFLICT ("username") DO UPDATE SET "date_of_birth" = "excluded"."date_of_birth", "updated_at" = "excluded"."updated_at";
