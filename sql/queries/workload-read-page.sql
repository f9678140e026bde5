-- The proof of concept's reader: a page of posts (skip 1-1000, take 1-20)
-- with their comments, as EF Core's Include(x => x.Comments) loads them.
SELECT p.id, p.blog_id, p.title, p.created_at,
       c.id AS comment_id, c.author, c.content AS comment
FROM (SELECT id, blog_id, title, created_at FROM posts ORDER BY id OFFSET $1 LIMIT $2) p
LEFT JOIN comments c ON c.post_id = p.id
ORDER BY p.id, c.id
