//! Small graph helpers shared by configuration checks and planning: cycle detection that names
//! the whole cycle, so an error can say `a -> b -> a` rather than "there is a cycle".

use std::collections::HashMap;

use petgraph::algo::tarjan_scc;
use petgraph::graph::DiGraph;

/// Finds a cycle in `node -> dependencies` edges and returns it as a path that starts and ends
/// with the same node (`["a", "b", "a"]`), or `None` if the graph is acyclic. Edges to unknown
/// nodes are ignored. Deterministic: the cycle through the first node (in input order) that is
/// on one.
pub fn find_cycle(edges: &[(String, Vec<String>)]) -> Option<Vec<String>> {
    let mut graph = DiGraph::<&str, ()>::new();
    let mut index = HashMap::new();
    for (node, _) in edges {
        index
            .entry(node.as_str())
            .or_insert_with(|| graph.add_node(node.as_str()));
    }
    for (node, deps) in edges {
        for dep in deps {
            if let (Some(&from), Some(&to)) = (index.get(node.as_str()), index.get(dep.as_str())) {
                graph.add_edge(from, to, ());
            }
        }
    }
    let on_cycle: Vec<_> = tarjan_scc(&graph)
        .into_iter()
        .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
        .flatten()
        .collect();
    let start = edges
        .iter()
        .filter_map(|(node, _)| index.get(node.as_str()).copied())
        .find(|n| on_cycle.contains(n))?;
    // Walk dependencies that stay on the cycle until we come back to a visited node.
    let mut path = vec![start];
    loop {
        let current = *path.last()?;
        let deps = edges
            .iter()
            .find(|(node, _)| node.as_str() == graph[current])
            .map(|(_, deps)| deps)?;
        let next = deps
            .iter()
            .filter_map(|d| index.get(d.as_str()).copied())
            .find(|n| on_cycle.contains(n))?;
        if let Some(pos) = path.iter().position(|&n| n == next) {
            let mut cycle: Vec<String> =
                path[pos..].iter().map(|&n| graph[n].to_string()).collect();
            cycle.push(graph[next].to_string());
            return Some(cycle);
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::find_cycle;

    fn edges(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn acyclic_graphs_have_no_cycle() {
        assert_eq!(
            find_cycle(&edges(&[("a", &["b"]), ("b", &[]), ("c", &["a", "b"])])),
            None
        );
    }

    #[test]
    fn cycles_are_named_in_full() {
        let cycle = find_cycle(&edges(&[
            ("x", &[]),
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a"]),
        ]));
        assert_eq!(
            cycle,
            Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
    }

    #[test]
    fn self_loops_are_cycles() {
        assert_eq!(
            find_cycle(&edges(&[("a", &["a"])])),
            Some(vec!["a".into(), "a".into()])
        );
    }
}
