# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 templates of the run report: Markdown, HTML and the SVG timeline.

Kept as Python strings, not template files: AnsiballZ ships module_utils to where the module
runs as Python only. ``report_rendering`` renders them from its table model (``ReportTables``,
``Timeline``) with trim_blocks and lstrip_blocks: a line holding only a block tag writes
nothing, every other line of a template is one line of output (a trailing backslash continues a
long line). HTML and SVG are autoescaped; Markdown is not.

Pure Python, no Ansible import.
"""

MARKDOWN = """\
# Rolling maintenance run {{ r.run_id }}

- status: **{{ r.status }}**{% if r.dry_run %} (dry run: nothing was changed){% endif %}

{% if r.message %}
- message: {{ r.message }}
{% endif %}
- started {{ r.started }}, ended {{ r.ended }} ({{ r.duration_s }} s)
- hosts patched: {{ r.totals.hosts_patched }}, skipped: {{ r.totals.hosts_skipped }}, \
failed: {{ r.totals.hosts_failed }} (of {{ r.totals.hosts_planned }})
- guests moved: {{ r.totals.guests_moved }} in {{ r.totals.migrations }} live migrations \
({{ r.totals.failed_migrations }} failed)
- guest downtime: total {{ r.total_downtime }}, worst {{ r.worst_downtime }}\
{% if r.worst_downtime_guest %} ({{ r.worst_downtime_guest }}){% endif %}


![timeline of the run]({{ svg_name }})

{% if r.waves %}
## Plan

{% for wave in r.waves %}
{{ loop.index }}. {{ wave | join(", ") or "-" }}
{% endfor %}

{% if r.capacity_ok is not none %}
Capacity proof: {% if r.capacity_ok %}ok{% else %}FAILED: {{ r.capacity_problems }}{% endif %}


{% endif %}
{% for plan in r.drain_plans %}
- drain plan of {{ plan.host }} (as the cluster is now): \
{% for guest, destination in plan.moves %}{{ guest }} -> {{ destination }}{% if not loop.last %}, {% endif %}\
{% else %}no guest to move{% endfor %}{% if plan.problems %} - REFUSED: {{ plan.problems }}{% endif %}

{% endfor %}
{% if r.drain_plans %}

{% endif %}
{% endif %}
{% for cluster in r.clusters %}
## Cluster {{ cluster.name }}: {{ cluster.status }}

{% if cluster.reason %}
{{ cluster.reason }}

{% endif %}
max_unavailable {{ cluster.max_unavailable }}, at most {{ cluster.max_in_maintenance }} host(s) in maintenance at once; \
hosts in maintenance {{ cluster.span }}

| host | wave | status | in maintenance | rebooted | note |
| --- | --- | --- | --- | --- | --- |
{% for host in cluster.hosts %}
| {{ host.name }} | {{ host.wave }} | {{ host.status }} | {{ host.marked }} - {{ host.unmarked }} | {{ host.rebooted }} \
| {{ host.note | markdown_cell }} |
{% endfor %}
{% if cluster.migrations %}

| guest | purpose | from | to | when | migration time | downtime | status |
| --- | --- | --- | --- | --- | --- | --- | --- |
{% for m in cluster.migrations %}
| {{ m.guest }} | {{ m.purpose }} | {{ m.source }} | {{ m.destination }} | {{ m.when }} | {{ m.time }} \
| {{ m.downtime }} | {{ m.status }} |
{% endfor %}
{% endif %}

{% endfor %}
{% if r.guests %}
## Where every guest is

| guest | host now | migrations | total downtime | worst downtime |
| --- | --- | --- | --- | --- |
{% for g in r.guests %}
| {{ g.name }} | {{ g.location }} | {{ g.migrations }} | {{ g.total_downtime }} | {{ g.worst_downtime }} |
{% endfor %}

{% endif %}
"""

STYLE = ("body{font-family:sans-serif;margin:2em;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0 1.5em}"
         "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;font-size:13px}"
         "th{background:#f3f3f3}.failed{color:#c62828;font-weight:bold}"
         ".kpi{display:inline-block;margin:0 1.5em .5em 0}.kpi b{font-size:20px;display:block}")

HTML = """\
<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Rolling maintenance {{ r.run_id }}</title>
<style>{{ style }}</style></head><body>
<h1>Rolling maintenance run {{ r.run_id }}</h1>
<p>Status: <b style="color:{{ r.status_colour }}">{{ r.status }}</b>\
{% if r.dry_run %} &mdash; dry run, nothing was changed{% endif %}. \
Started {{ r.started }}, ended {{ r.ended }} ({{ r.duration_s }} s).</p>
{% if r.message %}
<p class="failed">{{ r.message }}</p>
{% endif %}
<div>
{% for label, value in r.kpis %}
<span class="kpi"><b>{{ value }}</b>{{ label }}</span>
{% endfor %}
</div>
{{ svg | safe }}
{% if r.waves %}
<h2>Plan</h2><ol>
{% for wave in r.waves %}
<li>{{ wave | join(", ") }}</li>
{% endfor %}
</ol>
{% if r.capacity_ok is not none %}
<p>Capacity proof: {% if r.capacity_ok %}ok{% else %}<span class="failed">FAILED: {{ r.capacity_problems }}</span>{% endif %}</p>
{% endif %}
{% if r.drain_plans %}
<h3>Drain plans (as each cluster is now)</h3><ul>
{% for plan in r.drain_plans %}
<li><b>{{ plan.host }}</b>: \
{% for guest, destination in plan.moves %}{{ guest }} &rarr; {{ destination }}{% if not loop.last %}, {% endif %}\
{% else %}no guest to move{% endfor %}\
{% if plan.problems %} <span class="failed">REFUSED: {{ plan.problems }}</span>{% endif %}</li>
{% endfor %}
</ul>
{% endif %}
{% endif %}
{% for cluster in r.clusters %}
<h2>Cluster {{ cluster.name }}: <span{% if cluster.failed %} class="failed"{% endif %}>{{ cluster.status }}</span></h2>
{% if cluster.reason %}
<p class="failed">{{ cluster.reason }}</p>
{% endif %}
<p>max_unavailable {{ cluster.max_unavailable }}; at most {{ cluster.max_in_maintenance }} host(s) were in maintenance at once;\
 hosts in maintenance {{ cluster.span }}.</p>
<table><tr><th>host</th><th>wave</th><th>status</th><th>marked</th>\
<th>unmarked</th><th>rebooted</th><th>phases</th><th>note</th></tr>
{% for host in cluster.hosts %}
<tr><td>{{ host.name }}</td><td>{{ host.wave }}</td><td{% if host.failed %} class="failed"{% endif %}>{{ host.status }}</td>\
<td>{{ host.marked }}</td><td>{{ host.unmarked }}</td><td>{{ host.rebooted }}</td>\
<td>{{ host.phases }}</td><td>{{ host.note }}</td></tr>
{% endfor %}
</table>
{% if cluster.migrations %}
<table><tr><th>guest</th><th>purpose</th><th>from</th><th>to</th><th>when</th>\
<th>migration time</th><th>downtime</th><th>status</th></tr>
{% for m in cluster.migrations %}
<tr><td>{{ m.guest }}</td><td>{{ m.purpose }}</td><td>{{ m.source }}</td><td>{{ m.destination }}</td>\
<td>{{ m.when }}</td><td>{{ m.time }}</td><td>{{ m.downtime }}</td>\
<td{% if m.failed %} class="failed"{% endif %}>{{ m.status }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% endfor %}
{% if r.guests %}
<h2>Where every guest is</h2><table><tr><th>guest</th><th>host now</th>\
<th>migrations</th><th>total downtime</th><th>worst downtime</th></tr>
{% for g in r.guests %}
<tr><td>{{ g.name }}</td><td>{{ g.location }}</td><td>{{ g.migrations }}</td>\
<td>{{ g.total_downtime }}</td><td>{{ g.worst_downtime }}</td></tr>
{% endfor %}
</table>
{% endif %}
</body></html>
"""

SVG = """\
<svg xmlns="http://www.w3.org/2000/svg" width="{{ t.width }}" height="{{ t.height }}" \
font-family="sans-serif" font-size="11" role="img" aria-label="timeline of the run per host">
<text x="4" y="16" font-weight="bold">Timeline ({{ t.start }} - {{ t.end }}, {{ "%.0f" | format(t.span) }} s)</text>
{% for tick in t.ticks %}
<line x1="{{ "%.1f" | format(tick.x) }}" y1="{{ t.grid_top }}" x2="{{ "%.1f" | format(tick.x) }}" y2="{{ t.grid_bottom }}" stroke="#eee"/>
<text x="{{ "%.1f" | format(tick.x) }}" y="{{ t.grid_bottom + 14 }}" fill="#777" text-anchor="middle">+{{ tick.seconds }}s</text>
{% endfor %}
{% for row in t.rows %}
<text x="4" y="{{ row.y + 15 }}">{{ row.name }} <tspan fill="#777">({{ row.cluster }})</tspan></text>
{% if row.maintenance %}
<rect x="{{ "%.1f" | format(row.maintenance.x) }}" y="{{ row.y + 3 }}" width="{{ "%.1f" | format(row.maintenance.width) }}" \
height="{{ t.row_height - 6 }}" fill="{{ row.maintenance.colour }}">\
<title>{{ row.name }} in maintenance {{ row.maintenance.start }} - {{ row.maintenance.end }}</title></rect>
{% endif %}
{% for bar in row.phases %}
<rect x="{{ "%.1f" | format(bar.x) }}" y="{{ row.y + 6 }}" width="{{ "%.1f" | format(bar.width) }}" \
height="{{ t.row_height - 12 }}" fill="{{ bar.colour }}"{% if bar.alarm %} stroke="#c00" stroke-width="2"{% endif %}>\
<title>{{ row.name }} {{ bar.label }}: {{ bar.start }} - {{ bar.end }}</title></rect>
{% endfor %}
{% if row.failed_x is not none %}
<text x="{{ "%.1f" | format(row.failed_x) }}" y="{{ row.y + 15 }}" fill="#c00" font-weight="bold">&#10007; failed</text>
{% elif row.skipped is not none %}
<text x="{{ t.label_width + 4 }}" y="{{ row.y + 15 }}" fill="#777">skipped: {{ row.skipped }}</text>
{% endif %}
{% endfor %}
{% for item in t.legend %}
<rect x="{{ item.x }}" y="{{ t.legend_y - 9 }}" width="10" height="10" fill="{{ item.colour }}"/>\
<text x="{{ item.x + 13 }}" y="{{ t.legend_y }}">{{ item.name }}</text>
{% endfor %}
</svg>
"""
